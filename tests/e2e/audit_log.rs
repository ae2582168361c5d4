//! The audit log through the binaries, as an institution and an auditor
//! run it: `kihon4 serve` seals new events and sends each checkpoint to the
//! auditor's `kihon4 witness serve`; the auditor keeps a cosigned
//! checkpoint and checks an export against it with `kihon4 audit
//! verify-log --witness`; a checkpoint without the witness's cosignature,
//! or a changed export, is refused (exit 1).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kihon4_core::auth::Role;
use kihon4_test_support::{Backend, fresh_database};

use crate::process::{Running, SECRET, free_port, kihon4, kihon4_without_key, token};

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn note(base: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/v1/audit/log/checkpoint"))
        .bearer_auth(token(&[Role::Auditor]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `kihon4 audit verify-log EXPORT --log-key KEY --checkpoint NOTE [more]`.
fn verify_log(
    d: &Path,
    export: &Path,
    log_key: &str,
    checkpoint: &Path,
    more: &[&str],
) -> (i32, String) {
    let (code, out, err) = output(
        kihon4(d, &[])
            .args(["audit", "verify-log"])
            .arg(export)
            .args(["--log-key", log_key, "--checkpoint"])
            .arg(checkpoint)
            .args(more),
    );
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_run_by_the_auditor_cosigns_the_log_and_verify_log_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let key_path = d.join("data/audit-signing-key.pem");
    let mut envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_AUDIT_SIGNING_KEY", key_path.display().to_string()),
        (
            "KIHON4_AUDIT_LOG_ORIGIN",
            "audit.bank.example/kihon4".to_owned(),
        ),
        ("KIHON4_AUDIT_LOG_SEAL_INTERVAL_MS", "200".to_owned()),
    ];
    assert!(output(kihon4(d, &envs).arg("migrate")).0 == 0);
    let (code, log_vkey, err) = output(kihon4(d, &envs).args(["audit", "log-key"]));
    assert_eq!(code, 0, "{err}");
    let log_vkey = log_vkey.trim().to_owned();
    assert!(
        log_vkey.starts_with("audit.bank.example/kihon4+"),
        "{log_vkey}"
    );

    // The auditor's witness: its own key, state and port.
    let wkey = d.join("auditor/witness.pem");
    let (code, witness_vkey, err) = output(kihon4(d, &[]).args([
        "witness",
        "init-key",
        "--key",
        wkey.to_str().unwrap(),
        "--name",
        "auditor.example/witness",
    ]));
    assert_eq!(code, 0, "{err}");
    let witness_vkey = witness_vkey.trim().to_owned();
    let port = free_port();
    let mut witness = kihon4(d, &[])
        .args([
            "witness",
            "serve",
            "--key",
            wkey.to_str().unwrap(),
            "--name",
            "auditor.example/witness",
        ])
        .args([
            "--log",
            &log_vkey,
            "--state",
            d.join("auditor/state.json").to_str().unwrap(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("witness.log")).unwrap())
        .spawn()
        .unwrap();

    envs.push((
        "KIHON4_AUDIT_LOG_WITNESSES",
        format!("{witness_vkey} http://127.0.0.1:{port}/"),
    ));
    let mut serve = Running::start(d, "serve", &envs).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let res = http
            .post(format!("{}/v1/customers", serve.base))
            .bearer_auth(token(&[Role::Operator]))
            .json(&serde_json::json!({
                "external_ref": format!("WIT-{i}"),
                "email": format!("w{i}@example.jp"),
                "locale": "ja",
                "basic4": {"name": "山田太郎", "address": "東京都千代田区千代田1-1", "birth_date": "1980-02-17", "gender": "1"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // Sealed and cosigned within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cosigned = loop {
        let n = note(&serve.base).await;
        if n.contains("\u{2014} auditor.example/witness ") {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no cosignature:\n{n}\n{}\n{}",
            serve.log_text(),
            std::fs::read_to_string(d.join("witness.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    std::fs::write(d.join("kept.note"), &cosigned).unwrap();
    let kept_size: u64 = cosigned.lines().nth(1).unwrap().parse().unwrap();

    // More events; later, the newer checkpoint extends the kept one.
    let auditor = token(&[Role::Auditor]);
    let res = http
        .post(format!("{}/v1/customers", serve.base))
        .bearer_auth(token(&[Role::Operator]))
        .json(&serde_json::json!({"external_ref": "WIT-LATER", "email": "later@example.jp", "locale": "ja"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let later: serde_json::Value = res.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let newer = loop {
        let n = note(&serve.base).await;
        let size: u64 = n.lines().nth(1).unwrap_or("0").parse().unwrap_or(0);
        if size > kept_size {
            break n;
        }
        assert!(Instant::now() < deadline, "not sealed: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    std::fs::write(d.join("newer.note"), &newer).unwrap();
    let proof = http
        .get(format!(
            "{}/v1/audit/proofs/consistency?from={kept_size}&to={}",
            serve.base,
            newer.lines().nth(1).unwrap()
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(d.join("consistency.json"), &proof).unwrap();
    let consistency = |old: &str, new: &str| {
        output(
            kihon4(d, &[])
                .args(["audit", "verify-consistency", "--log-key", &log_vkey])
                .arg("--old")
                .arg(d.join(old))
                .arg("--new")
                .arg(d.join(new))
                .arg("--proof")
                .arg(d.join("consistency.json")),
        )
    };
    let (code, out, err) = consistency("kept.note", "newer.note");
    assert_eq!(code, 0, "{out}{err}");
    // The newer checkpoint given as the older: refused.
    let (code, out, err) = consistency("newer.note", "kept.note");
    assert_eq!(code, 2, "{out}{err}");

    // One customer's events, proven alone.
    let page = http
        .get(format!(
            "{}/v1/audit/proofs/customers/{}",
            serve.base,
            later["id"].as_str().unwrap()
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(d.join("customer.json"), &page).unwrap();
    let verify_customer = |page: &str| {
        output(
            kihon4(d, &[])
                .args(["audit", "verify-customer", "--log-key", &log_vkey])
                .arg(d.join(page)),
        )
    };
    let (code, out, err) = verify_customer("customer.json");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 event(s)"), "{out}");
    std::fs::write(
        d.join("changed-customer.json"),
        page.replacen("WIT-LATER", "WIT-OTHER", 1),
    )
    .unwrap();
    let (code, out, err) = verify_customer("changed-customer.json");
    assert_eq!(code, 1, "{out}{err}");
    serve.signal("TERM");
    serve.wait(Duration::from_secs(30)).await;
    let _ = witness.kill();
    let _ = witness.wait();

    let export = d.join("export.jsonl");
    let (code, _, err) = output(
        kihon4(d, &envs)
            .args(["audit", "export", "--out"])
            .arg(&export),
    );
    assert_eq!(code, 0, "{err}");
    // The export comes with the log's checkpoint of a prefix of it.
    let beside = d.join("export.jsonl.checkpoint");
    let (code, out) = verify_log(d, &export, &log_vkey, &beside, &[]);
    assert_eq!(code, 0, "{out}");
    let kept = d.join("kept.note");
    let (code, out) = verify_log(
        d,
        &export,
        &log_vkey,
        &kept,
        &["--witness", &witness_vkey, "--quorum", "1"],
    );
    assert_eq!(code, 0, "{out}");

    // The same note without the witness's line: refused under the policy.
    let bare: String = cosigned
        .lines()
        .filter(|l| !l.starts_with("\u{2014} auditor.example/witness "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("bare.note"), bare).unwrap();
    let (code, out) = verify_log(
        d,
        &export,
        &log_vkey,
        &d.join("bare.note"),
        &["--witness", &witness_vkey],
    );
    assert_eq!(code, 1, "{out}");
    // A changed export: refused against the kept checkpoint.
    let text = std::fs::read_to_string(&export).unwrap();
    let changed = text.replacen("WIT-2", "WIT-9", 1);
    assert_ne!(changed, text, "the export names the customers");
    std::fs::write(d.join("changed.jsonl"), changed).unwrap();
    let (code, out) = verify_log(d, &d.join("changed.jsonl"), &log_vkey, &kept, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the history was changed"), "{out}");
    // Bad usage: exit 2.
    let (code, _) = verify_log(d, &export, "nonsense", &kept, &[]);
    assert_eq!(code, 2);
}

/// Sealing rounds a kill is expected to leave to the other worker: it
/// takes over at its next round, within the interval.
const SEAL_INTERVAL_MS: u64 = 200;

async fn sealed(db: &sea_orm::DatabaseConnection) -> u64 {
    kihon4_core::audit_log::sealed_size(db).await.unwrap()
}

async fn newest_seq(db: &sea_orm::DatabaseConnection) -> u64 {
    crate::process::scalar(db, "SELECT COALESCE(MAX(seq), 0) FROM audit_events").await as u64
}

/// Four clients write while two workers seal and are SIGKILLed at random:
/// every committed event is sealed exactly once, in `seq` order, each
/// checkpoint is the tree of the events before it, and the other worker
/// takes over within the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealers_killed_at_random_seal_every_committed_event_once_in_order() {
    use kihon4_core::audit::{Actor, AuditContext, AuditEvent, Batch, append_batch};
    use rand::Rng;
    const KILLS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        (
            "KIHON4_AUDIT_LOG_SEAL_INTERVAL_MS",
            SEAL_INTERVAL_MS.to_string(),
        ),
    ];
    assert_eq!(output(kihon4(d, &envs).arg("migrate")).0, 0);
    let db = kihon4_core::db::connect(&url, 6).await.unwrap();
    let mut workers = vec![
        Running::start(d, "worker", &envs).await,
        Running::start(d, "worker", &envs).await,
    ];
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let ctx = AuditContext::new(Actor::worker(), None);
                for round in 0..100 {
                    let mut batch = Batch::default();
                    for i in 0..12 {
                        batch.push(
                            &ctx,
                            AuditEvent::new(
                                "test.written",
                                "test",
                                Some(format!("{w}-{round}-{i}")),
                            ),
                        );
                    }
                    let txn = kihon4_core::db::begin_write(&db).await.unwrap();
                    append_batch(&txn, batch).await.unwrap();
                    txn.commit().await.unwrap();
                    let pause = rand::thread_rng().gen_range(30..120);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            })
        })
        .collect();
    let mut takeovers = Vec::new();
    let mut while_unsealed = 0;
    for kill in 0..KILLS {
        let pause = rand::thread_rng().gen_range(100..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if newest_seq(&db).await > sealed(&db).await {
            while_unsealed += 1;
        }
        let which = rand::thread_rng().gen_range(0..workers.len());
        workers[which].signal("KILL");
        workers[which].wait(Duration::from_secs(10)).await;
        // The other worker seals what committed before the kill.
        let head = newest_seq(&db).await;
        let killed_at = Instant::now();
        while sealed(&db).await < head {
            assert!(
                killed_at.elapsed() < Duration::from_secs(5),
                "kill {kill}: nothing took over sealing up to {head}:\n{}",
                workers[1 - which].log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        takeovers.push(killed_at.elapsed());
        workers[which] = Running::start(d, "worker", &envs).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    // What was queued (the chain's head held by another writer) is
    // sequenced by the workers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while kihon4_core::audit::queue::depth(&db).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "queued events were not sequenced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = newest_seq(&db).await;
    assert_eq!(total, 4 * 100 * 12);
    assert!(
        while_unsealed >= KILLS / 2,
        "only {while_unsealed} of {KILLS} kills came while events waited to be sealed: the test tests little"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sealed(&db).await < total {
        assert!(Instant::now() < deadline, "not all sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        w.wait(Duration::from_secs(30)).await;
    }

    // Every checkpoint is the tree of the events before it; each hash is
    // stored once; no round failed.
    use kihon4_core::entities::{audit_events, audit_log_checkpoints, audit_log_hashes};
    use sea_orm::{EntityTrait, PaginatorTrait, QueryOrder};
    let events = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&db)
        .await
        .unwrap();
    // Each transaction's twelve events stand together, in their order,
    // whether they went into the chain at once or through the queue.
    for batch in events.chunks(12) {
        let ids: Vec<&str> = batch
            .iter()
            .map(|e| e.subject_id.as_deref().unwrap())
            .collect();
        let (w, round) = ids[0].rsplit_once('-').unwrap().0.split_once('-').unwrap();
        let expected: Vec<String> = (0..12).map(|i| format!("{w}-{round}-{i}")).collect();
        assert_eq!(
            ids, expected,
            "a transaction's events were split or reordered"
        );
    }
    let lines: Vec<String> = events.into_iter().map(|e| e.canonical).collect();
    let checkpoints = audit_log_checkpoints::Entity::find()
        .order_by_asc(audit_log_checkpoints::Column::TreeSize)
        .all(&db)
        .await
        .unwrap();
    let key =
        kihon4_core::audit_export::SigningKey::load(&d.join("data/audit-signing-key.pem")).unwrap();
    let notes: Vec<(String, Vec<u8>)> = checkpoints
        .iter()
        .map(|c| (c.tree_size.to_string(), c.note.clone().into_bytes()))
        .collect();
    let check = kihon4_core::audit_log::verify::verify_export_against(
        (lines.join("\n") + "\n").as_bytes(),
        &notes,
        &kihon4_core::audit_log::verifier_key(&key),
        |_| {},
    )
    .unwrap();
    assert_eq!(check.leaves, total);
    assert_eq!(check.matched.len(), checkpoints.len());
    assert_eq!(
        audit_log_hashes::Entity::find().count(&db).await.unwrap(),
        tlog_tiles::stored_hash_count(total),
        "each stored hash written once"
    );
    let slowest = takeovers.iter().max().unwrap();
    eprintln!(
        "{KILLS} kills ({while_unsealed} with events unsealed), {} checkpoints; the slowest takeover {slowest:?}",
        checkpoints.len()
    );
    assert!(
        *slowest < Duration::from_millis(SEAL_INTERVAL_MS * 5 + 1000),
        "a takeover took {slowest:?}"
    );
}

/// Customers imported from a CSV of `n` rows, as events of the trail.
fn import(d: &Path, envs: &[(&str, String)], tag: &str, n: usize) {
    let mut csv = String::from("external_ref,email,name,address,birth_date,gender\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{tag}-{i},{tag}{i}@example.jp,山田太郎,東京都千代田区{i}-1,1980-02-17,1\n"
        ));
    }
    let file = d.join(format!("{tag}.csv"));
    std::fs::write(&file, csv).unwrap();
    let (code, _, err) = output(kihon4(d, envs).args(["customers", "import"]).arg(&file));
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_key_is_rotated_at_the_command_line_and_an_auditor_with_the_first_key_follows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let old_key = d.join("data/audit-signing-key.pem");
    let new_key = d.join("keys/audit-2027.pem");
    let envs = |key: &Path| {
        vec![
            ("KIHON4_DATABASE_URL", url.clone()),
            ("KIHON4_JWT_SECRET", SECRET.to_owned()),
            ("KIHON4_AUDIT_SIGNING_KEY", key.display().to_string()),
        ]
    };
    let (old_envs, new_envs) = (envs(&old_key), envs(&new_key));
    assert_eq!(output(kihon4(d, &old_envs).arg("migrate")).0, 0);
    import(d, &old_envs, "ROT", 4);
    let (code, first, err) = output(kihon4(d, &old_envs).args(["audit", "seal"]));
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.join("first.note"), &first).unwrap();
    let (code, first_vkey, _) = output(kihon4(d, &old_envs).args(["audit", "log-key"]));
    assert_eq!(code, 0);
    let first_vkey = first_vkey.trim().to_owned();
    let origin = first.lines().next().unwrap().to_owned();

    // A new key that is not there, or is the current key: refused, and
    // the log keeps its key.
    for (bad, why) in [
        (d.join("keys/missing.pem"), "does not exist"),
        (old_key.clone(), "needs another key"),
    ] {
        let (code, out, err) = output(
            kihon4(d, &old_envs)
                .args(["audit", "rotate-key", "--new-key"])
                .arg(&bad),
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains(why), "{err}");
    }

    // The key officer makes the new key and rotates to it.
    let (code, _, err) = output(
        kihon4(d, &old_envs)
            .args(["audit", "init-key", "--out"])
            .arg(&new_key),
    );
    assert_eq!(code, 0, "{err}");
    let (code, statement, err) = output(
        kihon4(d, &old_envs)
            .args(["--actor", "key-officer", "audit", "rotate-key", "--new-key"])
            .arg(&new_key),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        statement.starts_with("kihon4 audit log key rotation\n"),
        "{statement}"
    );
    assert!(err.contains("Point KIHON4_AUDIT_SIGNING_KEY at"), "{err}");

    // The retired key seals nothing more; the new one seals under the
    // log's origin, though its own default origin is another.
    import(d, &old_envs, "AFTER", 3);
    let (code, _, err) = output(kihon4(d, &old_envs).args(["audit", "seal"]));
    assert_ne!(code, 0);
    assert!(err.contains("was retired"), "{err}");
    let (code, newest, err) = output(kihon4(d, &new_envs).args(["audit", "seal"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(newest.lines().next(), Some(origin.as_str()));
    std::fs::write(d.join("newest.note"), &newest).unwrap();
    let (code, keys, err) = output(kihon4(d, &new_envs).args(["audit", "log-keys"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert_eq!(keys.lines().next(), Some(first_vkey.as_str()));
    assert!(err.contains("current"), "{err}");
    std::fs::write(d.join("log.keys"), &keys).unwrap();

    // An auditor who holds only the first key: the export carries the
    // rotation, which hands the log to the new key.
    let export = d.join("export.jsonl");
    let (code, _, err) = output(
        kihon4(d, &new_envs)
            .args(["audit", "export", "--out"])
            .arg(&export),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out) = verify_log(
        d,
        &export,
        &first_vkey,
        &d.join("first.note"),
        &["--checkpoint", d.join("newest.note").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    // The keys file `log-keys` prints serves as well, for the customer's
    // proofs too.
    let (code, out) = verify_log(
        d,
        &export,
        d.join("log.keys").to_str().unwrap(),
        &d.join("newest.note"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // The rotation's statement changed in the export: refused.
    let text = std::fs::read_to_string(&export).unwrap();
    let cut: String = text
        .lines()
        .map(|l| {
            if l.contains("\"action\":\"audit.log_key_rotated\"") {
                l.replacen("successor-from", "successor-from-x", 1)
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(d.join("changed.jsonl"), cut).unwrap();
    let (code, out) = verify_log(
        d,
        &d.join("changed.jsonl"),
        &first_vkey,
        &d.join("newest.note"),
        &[],
    );
    assert_eq!(code, 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_key_moves_into_a_pkcs11_token_at_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name}: run the tests with infra/dev/test, which sets up SoftHSM (infra/dev/softhsm-env.sh)")
        })
    };
    let uri = format!(
        "pkcs11:token=kihon4-test;object=e2e-{}?module-path={}&pin-source=file:{}",
        uuid::Uuid::new_v4(),
        var("KIHON4_TEST_PKCS11_MODULE"),
        var("KIHON4_TEST_PKCS11_PIN_FILE")
    );
    let with_key = |key: String| {
        vec![
            ("KIHON4_DATABASE_URL", url.clone()),
            ("KIHON4_JWT_SECRET", SECRET.to_owned()),
            ("KIHON4_AUDIT_SIGNING_KEY", key),
            ("SOFTHSM2_CONF", var("SOFTHSM2_CONF")),
        ]
    };
    let file_envs = with_key(d.join("data/audit-signing-key.pem").display().to_string());
    let token_envs = with_key(uri.clone());
    assert_eq!(output(kihon4(d, &file_envs).arg("migrate")).0, 0);
    import(d, &file_envs, "HSM", 3);
    assert_eq!(output(kihon4(d, &file_envs).args(["audit", "seal"])).0, 0);

    // The pair is made in the token; its public key comes out, the private
    // key never does.
    let (code, out, err) = output(kihon4_without_key(d, &token_envs).args(["audit", "init-key"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("made in the PKCS#11 token"), "{out}");
    assert!(out.contains("-----BEGIN PUBLIC KEY-----"), "{out}");
    let (code, public, err) = output(kihon4(d, &token_envs).args(["audit", "public-key"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(public.trim()), "{public}");
    let (code, again, err) = output(kihon4_without_key(d, &token_envs).args(["audit", "init-key"]));
    assert_eq!(code, 1, "{again}{err}");
    assert!(err.contains("exists already"), "{err}");

    let (code, _, err) = output(
        kihon4(d, &file_envs)
            .args(["audit", "rotate-key", "--new-key"])
            .arg(&uri),
    );
    assert_eq!(code, 0, "{err}");
    import(d, &token_envs, "HSM-LATER", 2);
    let (code, note, err) = output(kihon4(d, &token_envs).args(["audit", "seal"]));
    assert_eq!(code, 0, "{err}");
    let (code, vkey, err) = output(kihon4(d, &token_envs).args(["audit", "log-key"]));
    assert_eq!(code, 0, "{err}");
    let (ok, out) = {
        let out = Command::new(var("KIHON4_TEST_TLOG_VERIFY"))
            .args(["checkpoint", "--vkey", vkey.trim(), "--note"])
            .arg({
                let p = d.join("hsm.note");
                std::fs::write(&p, &note).unwrap();
                p
            })
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(
        ok,
        "Go's note package refused the token's checkpoint: {out}"
    );
    // The file key was retired: it seals nothing more.
    import(d, &file_envs, "HSM-LAST", 1);
    let (code, _, err) = output(kihon4(d, &file_envs).args(["audit", "seal"]));
    assert_ne!(code, 0);
    assert!(err.contains("was retired"), "{err}");
}
