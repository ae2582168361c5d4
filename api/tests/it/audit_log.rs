//! The audit log (docs/audit.md, "The audit log"): events sealed into an
//! RFC 6962 tree, C2SP checkpoints, proofs and tiles, each checked by
//! kihon4's code and by Go's reference packages (`tlog-verify`, built by
//! `infra/dev/tlog-verify-env.sh`), and tampering caught.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::audit::{Actor, AuditContext, AuditEvent, Batch, append_batch};
use kihon4_core::audit_log::{self, seal::seal, seal::seal_all, verifier_key, verify_checkpoint};
use kihon4_core::entities::{audit_events, audit_log_checkpoints, audit_log_hashes};
use kihon4_test_support::both;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::Value;
use tlog_tiles::{Hash, check_record, check_tree, record_hash};

use crate::helpers::{Backend, TestApp, expect_problem};

both!(
    sealed_events_give_checkpoints_proofs_and_tiles_that_go_verifies,
    bad_log_requests_get_their_problems,
    a_rewritten_history_is_caught_by_a_kept_checkpoint,
    concurrent_sealers_seal_every_event_once_in_order,
    a_witness_cosigns_the_log_and_refuses_a_rewritten_history,
    a_customers_events_are_proven_without_anyone_elses,
    a_rotated_key_takes_the_log_over_and_the_retired_one_signs_nothing,
    a_key_in_a_pkcs11_token_takes_the_log_over_and_signs_what_go_verifies,
    a_rotation_racing_sealers_leaves_no_later_tree_to_the_retired_key,
);

/// The independent verifier (Go's sumdb/note and sumdb/tlog).
fn tlog_verify() -> String {
    std::env::var("KIHON4_TEST_TLOG_VERIFY").expect(
        "KIHON4_TEST_TLOG_VERIFY: run the tests with infra/dev/test, which builds tlog-verify (infra/dev/tlog-verify-env.sh)",
    )
}

fn go(args: &[&str]) -> (bool, String) {
    let out = Command::new(tlog_verify())
        .args(args)
        .output()
        .expect("tlog-verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        other => panic!("tlog-verify was used wrongly ({other:?}): {text}"),
    }
}

/// Go's check of one leaf's inclusion proof (`{"leaf_index", "tree_size",
/// "proof"}`) in the tree of the checkpoint in `note_file`.
fn go_inclusion(
    dir: &Path,
    vkey: &str,
    note_file: &str,
    leaf: &[u8],
    index: u64,
    proof: &Value,
) -> (bool, String) {
    go(&[
        "inclusion",
        "--vkey",
        vkey,
        "--note",
        note_file,
        "--leaf",
        &write(dir, "leaf", leaf),
        "--index",
        &index.to_string(),
        "--proof",
        &write(dir, "proof.json", proof.to_string()),
    ])
}

async fn append(app: &TestApp, n: usize, tag: &str) {
    let ctx = AuditContext::new(Actor::worker(), None);
    let mut batch = Batch::default();
    for i in 0..n {
        batch.push(
            &ctx,
            AuditEvent::new("test.logged", "test", Some(format!("{tag}-{i}"))),
        );
    }
    let txn = kihon4_core::db::begin_write(&app.db).await.unwrap();
    append_batch(&txn, batch).await.unwrap();
    txn.commit().await.unwrap();
}

async fn canonicals(app: &TestApp) -> Vec<String> {
    audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.canonical)
        .collect()
}

async fn text(app: &TestApp, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut req = app.http.get(app.url(path)).bearer_auth(app.auditor());
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

async fn json(app: &TestApp, path: &str) -> Value {
    let res = app.get(path, &app.auditor()).await;
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
        .collect()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// What an insider with database access does: rewrites one event's
/// canonical JSON (`from` becomes `to`) and throws the log away, cosignatures
/// included, to seal it again with the real key.
async fn rewrite_history(app: &TestApp, seq: i64, from: &str, to: &str) {
    let db = &app.db;
    let mut event: audit_events::ActiveModel = audit_events::Entity::find_by_id(seq)
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .into();
    let canonical = event.canonical.clone().unwrap().replace(from, to);
    event.canonical = sea_orm::ActiveValue::Set(canonical);
    audit_events::Entity::update(event).exec(db).await.unwrap();
    audit_log_hashes::Entity::delete_many()
        .exec(db)
        .await
        .unwrap();
    audit_log_checkpoints::Entity::delete_many()
        .exec(db)
        .await
        .unwrap();
    kihon4_core::entities::audit_log_cosignatures::Entity::delete_many()
        .exec(db)
        .await
        .unwrap();
}

async fn sealed_events_give_checkpoints_proofs_and_tiles_that_go_verifies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.audit_key();
    let vkey = verifier_key(&key);
    let dir = tempfile::tempdir().unwrap();
    app.create_customer("LOG-1").await;
    assert_eq!(text(&app, "/v1/audit/log/checkpoint", None).await.0, 404);
    append(&app, 600, "a").await;
    // Three rounds: checkpoints at 250, 500 and the rest.
    assert_eq!(
        seal(&app.db, &key, 250).await.unwrap().unwrap().tree_size,
        250
    );
    assert_eq!(
        seal(&app.db, &key, 250).await.unwrap().unwrap().tree_size,
        500
    );
    let last = seal_all(&app.db, &key).await.unwrap().unwrap();
    let leaves = canonicals(&app).await;
    assert_eq!(last.tree_size, leaves.len() as u64);
    assert!(
        seal(&app.db, &key, 250).await.unwrap().is_none(),
        "nothing left"
    );

    // The newest checkpoint, both ways, verifies and is the sealed tree.
    let (status, note) = text(&app, "/v1/audit/log/checkpoint", None).await;
    assert_eq!(status, 200);
    assert_eq!(note, last.note);
    let (_, latest) = text(&app, "/v1/audit/checkpoints/latest", Some("text/plain")).await;
    assert_eq!(latest, note);
    let checkpoint = verify_checkpoint(note.as_bytes(), &vkey).unwrap();
    assert_eq!(checkpoint.size, leaves.len() as u64);
    let (status, at_250) = text(&app, "/v1/audit/checkpoints/250", None).await;
    assert_eq!(status, 200);
    let old = verify_checkpoint(at_250.as_bytes(), &vkey).unwrap();
    assert_eq!(old.size, 250);
    // The JSON checkpoint of the chain is unchanged without text/plain.
    let (status, chain) = text(&app, "/v1/audit/checkpoints/latest", None).await;
    assert!(status == 200 || status == 404, "{status} {chain}");

    // Inclusion proofs, checked here and by Go.
    let note_file = write(dir.path(), "note", &note);
    for seq in [1u64, 2, 255, 256, 257, 500, leaves.len() as u64] {
        let proof = json(&app, &format!("/v1/audit/proofs/inclusion?seq={seq}")).await;
        assert_eq!(proof["leaf_index"], seq - 1);
        let leaf = leaves[seq as usize - 1].as_bytes();
        check_record(
            &hashes(&proof),
            checkpoint.size,
            checkpoint.root,
            seq - 1,
            record_hash(leaf),
        )
        .unwrap();
        let (ok, out) = go_inclusion(dir.path(), &vkey, &note_file, leaf, seq - 1, &proof);
        assert!(ok, "seq {seq}: {out}");
        // Another leaf's bytes do not pass.
        let other = leaves[seq as usize % leaves.len()].as_bytes();
        let (ok, _) = go_inclusion(dir.path(), &vkey, &note_file, other, seq - 1, &proof);
        assert!(!ok, "seq {seq}: another leaf passed");
    }
    // In an older tree too.
    let proof = json(&app, "/v1/audit/proofs/inclusion?seq=100&tree_size=250").await;
    check_record(
        &hashes(&proof),
        250,
        old.root,
        99,
        record_hash(leaves[99].as_bytes()),
    )
    .unwrap();

    // Consistency, checked here and by Go.
    let proof = json(&app, "/v1/audit/proofs/consistency?from=250").await;
    assert_eq!(proof["to"], checkpoint.size);
    check_tree(
        &hashes(&proof),
        checkpoint.size,
        checkpoint.root,
        250,
        old.root,
    )
    .unwrap();
    let old_file = write(dir.path(), "old", &at_250);
    let (ok, out) = go(&[
        "consistency",
        "--vkey",
        &vkey,
        "--old",
        &old_file,
        "--new",
        &note_file,
        "--proof",
        &write(dir.path(), "cons.json", proof.to_string()),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = go(&[
        "checkpoint",
        "--vkey",
        &vkey,
        "--note",
        &note_file,
        "--origin",
        key.log_origin(),
    ]);
    assert!(
        ok && out.contains(&format!("size={}", leaves.len())),
        "{out}"
    );

    // The tiles: Go reads the tree from them, checks every tile and every leaf.
    let export = write(dir.path(), "export.jsonl", leaves.join("\n") + "\n");
    let base = app.url("/v1/audit/log");
    let token = app.auditor();
    let (ok, out) = go(&[
        "tiles", "--vkey", &vkey, "--note", &note_file, "--base", &base, "--bearer", &token,
        "--leaves", &export, "--first", "0", "--all",
    ]);
    assert!(ok, "{out}");
    let res = app.get("/v1/audit/log/tile/0/000", &app.auditor()).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable"),
        "tiles are immutable"
    );
    assert_eq!(res.bytes().await.unwrap().len(), 256 * 32);

    // A stored hash changed under the log: Go's check of the tiles fails.
    let row = audit_log_hashes::Entity::find_by_id(3i64)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut changed: audit_log_hashes::ActiveModel = row.into();
    changed.hash = sea_orm::ActiveValue::Set(vec![7; 32]);
    audit_log_hashes::Entity::update(changed)
        .exec(&app.db)
        .await
        .unwrap();
    let (ok, _) = go(&[
        "tiles", "--vkey", &vkey, "--note", &note_file, "--base", &base, "--bearer", &token,
        "--all",
    ]);
    assert!(!ok, "a changed tile passed");
}

async fn bad_log_requests_get_their_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.audit_key();
    append(&app, 10, "b").await;
    seal(&app.db, &key, 5).await.unwrap();
    let auditor = app.auditor();
    for (path, status, slug) in [
        ("/v1/audit/proofs/inclusion?seq=6", 404, "log-not-sealed"),
        (
            "/v1/audit/proofs/inclusion?seq=3&tree_size=6",
            404,
            "log-not-sealed",
        ),
        (
            "/v1/audit/proofs/inclusion?seq=4&tree_size=3",
            404,
            "not-found",
        ),
        ("/v1/audit/proofs/inclusion?seq=0", 400, "invalid-query"),
        (
            "/v1/audit/proofs/inclusion?seq=1&tree_size=0",
            400,
            "invalid-query",
        ),
        ("/v1/audit/proofs/consistency?from=0", 400, "invalid-query"),
        ("/v1/audit/proofs/inclusion?seq=x", 400, "invalid-query"),
        ("/v1/audit/proofs/inclusion", 400, "invalid-query"),
        (
            "/v1/audit/proofs/inclusion?seq=1&nope=1",
            400,
            "invalid-query",
        ),
        ("/v1/audit/proofs/consistency?from=4&to=3", 404, "not-found"),
        ("/v1/audit/proofs/consistency?from=9", 404, "log-not-sealed"),
        (
            "/v1/audit/proofs/consistency?from=1&to=9",
            404,
            "log-not-sealed",
        ),
        ("/v1/audit/checkpoints/4", 404, "not-found"),
        ("/v1/audit/checkpoints/05", 404, "not-found"),
        ("/v1/audit/log/tile/0/000", 404, "not-found"),
        ("/v1/audit/log/tile/0/0", 404, "not-found"),
        ("/v1/audit/log/tile/0/000.p/6", 404, "not-found"),
        ("/v1/audit/log/tile/0/x000/000.p/5", 404, "not-found"),
    ] {
        let res = app.get(path, &auditor).await;
        expect_problem(res, status, slug).await;
    }
    let res = app.get("/v1/audit/log/tile/0/000.p/5", &auditor).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 5 * 32);
    for path in ["/v1/audit/log/checkpoint", "/v1/audit/log/keys"] {
        expect_problem(app.get(path, &app.operator()).await, 403, "forbidden").await;
        let res = app.http.get(app.url(path)).send().await.unwrap();
        expect_problem(res, 401, "unauthorized").await;
    }
}

async fn a_rewritten_history_is_caught_by_a_kept_checkpoint(backend: Backend) {
    use kihon4_core::audit_log::verify::{LogCheckError, verify_export_against};
    let app = TestApp::spawn(backend).await;
    let key = app.audit_key();
    let vkey = verifier_key(&key);
    let dir = tempfile::tempdir().unwrap();
    append(&app, 40, "c").await;
    let kept = seal_all(&app.db, &key).await.unwrap().unwrap();
    let kept_file = write(dir.path(), "kept", &kept.note);

    // An insider with the real key rewrites event 22, rebuilds the log and
    // signs it again: the new checkpoint verifies on its own.
    let db = &app.db;
    rewrite_history(&app, 22, "c-", "X-").await;
    append(&app, 5, "d").await;
    let forged = seal_all(db, &key).await.unwrap().unwrap();
    assert!(verify_checkpoint(forged.note.as_bytes(), &vkey).is_ok());

    // The auditor's kept checkpoint catches it: offline from the export...
    let export = canonicals(&app).await.join("\n") + "\n";
    let found = verify_export_against(
        export.as_bytes(),
        &[("kept".into(), kept.note.clone().into_bytes())],
        &vkey,
        |_| {},
    );
    assert!(
        matches!(found, Err(LogCheckError::Tampered(_))),
        "{found:?}"
    );
    // ... and with a consistency proof, by Go.
    let proof = json(
        &app,
        &format!("/v1/audit/proofs/consistency?from={}", kept.tree_size),
    )
    .await;
    let (ok, _) = go(&[
        "consistency",
        "--vkey",
        &vkey,
        "--old",
        &kept_file,
        "--new",
        &write(dir.path(), "forged", &forged.note),
        "--proof",
        &write(dir.path(), "p.json", proof.to_string()),
    ]);
    assert!(!ok, "the forged log passed as consistent");
}

async fn concurrent_sealers_seal_every_event_once_in_order(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let key = std::sync::Arc::new(app.audit_key());
    let stop = tokio_util::sync::CancellationToken::new();
    // Two workers' sealing loops, as two processes would run them.
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(kihon4_worker::seal_forever(
                app.db.clone(),
                key.clone(),
                std::time::Duration::from_millis(100),
                Vec::new(),
                stop.clone(),
            ))
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for round in 0..10 {
                    append(&app, 7, &format!("w{w}-{round}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    app.sequenced().await;
    let total = canonicals(&app).await.len() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while audit_log::sealed_size(&app.db).await.unwrap() < total {
        assert!(std::time::Instant::now() < deadline, "not sealed in time");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    for s in sealers {
        s.await.unwrap();
    }
    // Every checkpoint is the tree of the events before it, in seq order.
    let leaves = canonicals(&app).await;
    let vkey = verifier_key(&key);
    let checkpoints = audit_log_checkpoints::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert!(!checkpoints.is_empty());
    let export = leaves.join("\n") + "\n";
    let notes: Vec<(String, Vec<u8>)> = checkpoints
        .iter()
        .map(|c| (c.tree_size.to_string(), c.note.clone().into_bytes()))
        .collect();
    let check = kihon4_core::audit_log::verify::verify_export_against(
        export.as_bytes(),
        &notes,
        &vkey,
        |_| {},
    )
    .unwrap();
    assert_eq!(check.leaves, total);
    assert_eq!(check.matched.len(), checkpoints.len());
    let stored = audit_log_hashes::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .len() as u64;
    assert_eq!(
        stored,
        tlog_tiles::stored_hash_count(total),
        "each hash stored once"
    );
}

async fn a_witness_cosigns_the_log_and_refuses_a_rewritten_history(backend: Backend) {
    use kihon4_core::audit_export::SigningKey;
    use kihon4_core::audit_log::witness::{
        Cosigner, Witness, WitnessEndpoint, parse_witness, submit, verify_cosignatures,
    };
    let app = TestApp::spawn(backend).await;
    let key = app.audit_key();
    let vkey = verifier_key(&key);
    let dir = tempfile::tempdir().unwrap();
    // The auditor's witness, on its own key and state file, over HTTP.
    let cosigner = Cosigner::new(
        SigningKey::create(&dir.path().join("witness.pem")).unwrap(),
        "auditor.example/witness",
    )
    .unwrap();
    let witness = std::sync::Arc::new(
        Witness::open(
            cosigner,
            std::slice::from_ref(&vkey),
            &dir.path().join("state.json"),
        )
        .unwrap(),
    );
    let wkey = witness.public_key();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(kihon4_api::witness::server(listener, witness).unwrap());
    let endpoint: WitnessEndpoint =
        parse_witness(&format!("{} http://127.0.0.1:{port}/", wkey.vkey())).unwrap();
    let http = reqwest::Client::new();

    append(&app, 30, "w").await;
    seal_all(&app.db, &key).await.unwrap();
    // The witness unreachable first (a port nobody listens on): nothing
    // kept, and the next round gets its cosignature.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let away = parse_witness(&format!("{} http://127.0.0.1:{closed_port}/", wkey.vkey())).unwrap();
    let done = submit(&app.db, &vkey, &[&away], &http).await.unwrap();
    assert!(done.cosigned.is_empty());
    assert!(
        done.failed[0].1.contains("cannot be reached"),
        "{:?}",
        done.failed
    );
    assert_eq!(
        kihon4_core::entities::audit_log_cosignatures::Entity::find()
            .all(&app.db)
            .await
            .unwrap()
            .len(),
        0
    );
    let done = submit(&app.db, &vkey, &[&endpoint], &http).await.unwrap();
    assert_eq!(done.cosigned, [endpoint.id()], "{:?}", done.failed);
    append(&app, 9, "x").await;
    seal_all(&app.db, &key).await.unwrap();
    // The next one goes with a consistency proof from the witness's size.
    let done = submit(&app.db, &vkey, &[&endpoint], &http).await.unwrap();
    assert_eq!(done.cosigned.len(), 1, "{:?}", done.failed);
    // Nothing new: nothing sent.
    assert_eq!(
        submit(&app.db, &vkey, &[&endpoint], &http).await.unwrap(),
        Default::default()
    );

    // The checkpoint is served with its cosignature; kihon4 and Go both count it.
    let (_, note) = text(&app, "/v1/audit/log/checkpoint", None).await;
    assert_eq!(
        verify_cosignatures(note.as_bytes(), &vkey, std::slice::from_ref(&wkey)),
        Ok(1)
    );
    let note_file = write(dir.path(), "cosigned", &note);
    let (ok, out) = go(&[
        "checkpoint",
        "--vkey",
        &vkey,
        "--note",
        &note_file,
        "--cosigner",
        &wkey.vkey(),
        "--quorum",
        "1",
    ]);
    assert!(ok && out.contains("cosigned=1"), "{out}");

    // An insider rewrites event 5 with the real key and rebuilds the log:
    // the witness refuses to cosign it, so the forged head has no cosignature.
    let db = &app.db;
    rewrite_history(&app, 5, "w-", "F-").await;
    append(&app, 3, "y").await;
    seal_all(db, &key).await.unwrap();
    let done = submit(db, &vkey, &[&endpoint], &http).await.unwrap();
    assert!(done.cosigned.is_empty());
    assert!(done.failed[0].1.contains("422"), "{:?}", done.failed);
    // Even told to start afresh, the witness goes on from what it saw.
    kihon4_core::entities::audit_log_witnesses::Entity::delete_many()
        .exec(db)
        .await
        .unwrap();
    let done = submit(db, &vkey, &[&endpoint], &http).await.unwrap();
    assert!(done.cosigned.is_empty(), "the forged head was cosigned");
    let (_, forged) = text(&app, "/v1/audit/log/checkpoint", None).await;
    assert!(
        verify_checkpoint(forged.as_bytes(), &vkey).is_ok(),
        "signed with the real key"
    );
    assert_eq!(
        verify_cosignatures(forged.as_bytes(), &vkey, std::slice::from_ref(&wkey)),
        Ok(0)
    );
    let (ok, _) = go(&[
        "checkpoint",
        "--vkey",
        &vkey,
        "--note",
        &write(dir.path(), "forged", &forged),
        "--cosigner",
        &wkey.vkey(),
        "--quorum",
        "1",
    ]);
    assert!(!ok, "Go accepted a checkpoint with no cosignature");
}

async fn a_customers_events_are_proven_without_anyone_elses(backend: Backend) {
    use kihon4_core::audit_log::{CustomerProofs, verify_customer_proofs};
    let app = TestApp::spawn(backend).await;
    let key = app.audit_key();
    let vkey = verifier_key(&key);
    let dir = tempfile::tempdir().unwrap();
    let a = app.create_customer("PROVE-A").await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    append(&app, 40, "filler").await;
    app.create_customer("PROVE-B").await;
    for (version, locale) in [(1, "en"), (2, "ja"), (3, "en")] {
        let res = app
            .http
            .patch(app.url(&format!("/v1/customers/{a_id}")))
            .bearer_auth(app.operator())
            .header("if-match", format!("\"{version}\""))
            .json(&serde_json::json!({"locale": locale}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        append(&app, 7, "more").await;
    }
    seal_all(&app.db, &key).await.unwrap();
    let expected: Vec<String> = audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.customer_id.map(|c| c.to_string()) == Some(a_id.clone()))
        .map(|e| e.canonical)
        .collect();
    assert_eq!(expected.len(), 4, "created and three updates");
    assert!(
        expected
            .iter()
            .all(|e| e.contains("\"customer_ref\":\"PROVE-A\""))
    );

    // Two pages of two.
    let first: CustomerProofs = serde_json::from_value(
        json(&app, &format!("/v1/audit/proofs/customers/{a_id}?limit=2")).await,
    )
    .unwrap();
    let cursor = first.next_cursor.clone().expect("a second page");
    let second: CustomerProofs = serde_json::from_value(
        json(
            &app,
            &format!("/v1/audit/proofs/customers/{a_id}?limit=2&cursor={cursor}"),
        )
        .await,
    )
    .unwrap();
    assert!(second.next_cursor.is_none());
    let events: Vec<String> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(events, expected, "the customer's events, all, in order");
    assert_eq!(verify_customer_proofs(&first, &vkey), Ok(2));
    assert_eq!(verify_customer_proofs(&second, &vkey), Ok(2));

    // Go checks one of them on its own.
    let e = &first.events[1];
    let proof = serde_json::json!({"leaf_index": e.seq - 1, "tree_size": first.tree_size, "proof": e.proof});
    let note_file = write(dir.path(), "note", &first.checkpoint);
    let (ok, out) = go_inclusion(
        dir.path(),
        &vkey,
        &note_file,
        e.event.as_bytes(),
        e.seq - 1,
        &proof,
    );
    assert!(ok, "{out}");

    // A changed event, someone else's event, another key: refused.
    let mut changed = first.clone();
    changed.events[0].event = changed.events[0].event.replace("PROVE-A", "PROVE-Z");
    assert!(
        verify_customer_proofs(&changed, &vkey)
            .unwrap_err()
            .contains("changed")
    );
    let mut other = first.clone();
    other.customer_id = uuid::Uuid::new_v4();
    assert!(verify_customer_proofs(&other, &vkey).is_err());
    let mut swapped = first.clone();
    swapped.events.swap(0, 1);
    assert!(verify_customer_proofs(&swapped, &vkey).is_err());
    let stranger =
        kihon4_core::audit_export::SigningKey::create(&dir.path().join("s.pem")).unwrap();
    assert!(verify_customer_proofs(&first, &verifier_key(&stranger)).is_err());

    // Bad requests.
    let auditor = app.auditor();
    expect_problem(
        app.get(
            &format!("/v1/audit/proofs/customers/{a_id}?tree_size=3"),
            &auditor,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/audit/proofs/customers/{a_id}?limit=0"),
            &auditor,
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/audit/proofs/customers/{a_id}?cursor=x"),
            &auditor,
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/audit/proofs/customers/{a_id}"),
            &app.operator(),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let none: CustomerProofs = serde_json::from_value(
        json(
            &app,
            &format!("/v1/audit/proofs/customers/{}", uuid::Uuid::new_v4()),
        )
        .await,
    )
    .unwrap();
    assert!(none.events.is_empty());
}

async fn a_rotated_key_takes_the_log_over_and_the_retired_one_signs_nothing(backend: Backend) {
    use kihon4_core::audit_export::SigningKey;
    use kihon4_core::audit_log::keys;
    use kihon4_core::audit_log::note::{checkpoint_note_as, read_checkpoint, verifier_key_as};
    use kihon4_core::audit_log::verify::{LogCheckError, verify_export_against};
    use kihon4_core::error::CoreError;
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let old = app.audit_key();
    let origin = old.log_origin().to_owned();
    let old_vkey = verifier_key(&old);
    append(&app, 30, "r").await;
    let before = seal_all(&app.db, &old).await.unwrap().unwrap();
    let listed = json(&app, "/v1/audit/log/keys").await;
    assert_eq!(listed["origin"], origin.as_str());
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["keys"][0]["vkey"], old_vkey.as_str());
    assert_eq!(listed["keys"][0]["first_tree_size"], 1);
    assert!(listed["keys"][0]["last_tree_size"].is_null());

    // The new key's own default origin is another: the log keeps its own.
    let new = SigningKey::create(&dir.path().join("new.pem")).unwrap();
    assert_ne!(new.log_origin(), origin);
    let ctx = AuditContext::new(Actor::cli_person("key-officer").unwrap(), None);
    let rotated = keys::rotate(&app.db, &ctx, &old, &new).await.unwrap();
    assert_eq!(
        (
            rotated.rotation.retired_after,
            rotated.rotation.successor_from,
            rotated.seq
        ),
        (30, 31, 31)
    );
    let new_vkey = verifier_key_as(&origin, &new);
    assert_eq!(rotated.rotation.successor, new_vkey);

    // The retired key signs nothing more, and a key never brought in neither.
    append(&app, 5, "s").await;
    let refused = seal(&app.db, &old, 100).await;
    assert!(
        matches!(&refused, Err(CoreError::SigningKey(e)) if e.contains("was retired")),
        "{refused:?}"
    );
    let stranger = SigningKey::create(&dir.path().join("stranger.pem")).unwrap();
    let refused = seal(&app.db, &stranger, 100).await;
    assert!(
        matches!(&refused, Err(CoreError::SigningKey(e)) if e.contains("rotate-key")),
        "{refused:?}"
    );
    let after = seal_all(&app.db, &new).await.unwrap().unwrap();
    assert_eq!(after.tree_size, 36);
    assert!(after.note.starts_with(&format!("{origin}\n36\n")));
    let listed = json(&app, "/v1/audit/log/keys").await;
    let listed = listed["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["last_tree_size"], 30);
    assert!(listed[0]["valid_until"].is_string());
    assert_eq!(listed[1]["vkey"], new_vkey.as_str());
    assert_eq!(listed[1]["first_tree_size"], 31);
    assert_eq!(listed[1]["rotation_seq"], 31);
    assert_eq!(listed[1]["statement"], rotated.statement.as_str());
    let event = json(&app, "/v1/audit/events?action=audit.log_key_rotated").await;
    assert_eq!(event["items"][0]["actor"], "cli:key-officer", "{event}");

    // Go's note package: the statement is signed by both keys, and by
    // no stranger; the new checkpoint is the log's under its origin.
    let statement = write(dir.path(), "statement", &rotated.statement);
    let (ok, out) = go(&[
        "signed-by",
        "--signer",
        &old_vkey,
        "--signer",
        &new_vkey,
        "--note",
        &statement,
    ]);
    assert_eq!((ok, out.trim()), (true, "ok signers=2"));
    let (ok, _) = go(&[
        "signed-by",
        "--signer",
        &verifier_key_as(&origin, &stranger),
        "--note",
        &statement,
    ]);
    assert!(!ok, "a stranger's signature was found");
    let (ok, out) = go(&[
        "checkpoint",
        "--vkey",
        &new_vkey,
        "--origin",
        &origin,
        "--note",
        &write(dir.path(), "after", &after.note),
    ]);
    assert!(ok, "{out}");

    // An auditor who holds the first key alone verifies the whole export,
    // the successor learnt from the statement; a checkpoint the retired
    // key signs afterwards (a thief of it) is not the log's.
    let export = canonicals(&app).await.join("\n") + "\n";
    let checked = verify_export_against(
        export.as_bytes(),
        &[
            ("before".into(), before.note.clone().into_bytes()),
            ("after".into(), after.note.clone().into_bytes()),
        ],
        &old_vkey,
        |_| {},
    )
    .unwrap();
    assert_eq!(checked.matched, [30, 36]);
    let (_, root) = read_checkpoint(after.note.as_bytes()).unwrap();
    let thief = checkpoint_note_as(&old, &origin, 36, root).unwrap();
    let found = verify_export_against(
        export.as_bytes(),
        &[("thief".into(), thief.into_bytes())],
        &old_vkey,
        |_| {},
    );
    assert!(
        matches!(&found, Err(LogCheckError::Tampered(e)) if e.contains("does not sign trees of that size")),
        "{found:?}"
    );
    // Both keys given: the newest checkpoint extends the first one.
    let both = format!("{old_vkey}\n{new_vkey}");
    assert!(verify_checkpoint(after.note.as_bytes(), &both).is_ok());

    // A retired key never comes back.
    let back = keys::rotate(&app.db, &ctx, &new, &old).await;
    assert!(
        matches!(&back, Err(CoreError::SigningKey(e)) if e.contains("never comes back")),
        "{back:?}"
    );
}

/// A key in the SoftHSM token the test command sets up
/// (infra/dev/softhsm-env.sh), under a label of its own: its PKCS#11 URI.
fn token_key_uri(label: &str) -> String {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name}: run the tests with infra/dev/test, which sets up SoftHSM (infra/dev/softhsm-env.sh)")
        })
    };
    format!(
        "pkcs11:token=kihon4-test;object={label}?module-path={}&pin-source=file:{}",
        var("KIHON4_TEST_PKCS11_MODULE"),
        var("KIHON4_TEST_PKCS11_PIN_FILE")
    )
}

async fn a_key_in_a_pkcs11_token_takes_the_log_over_and_signs_what_go_verifies(backend: Backend) {
    use kihon4_core::audit_export::SigningKey;
    use kihon4_core::audit_log::keys;
    use kihon4_core::audit_log::note::verifier_key_as;
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file_key = app.audit_key();
    let origin = file_key.log_origin().to_owned();
    append(&app, 7, "h").await;
    seal_all(&app.db, &file_key).await.unwrap().unwrap();

    // Made in the token, not extractable; found again by its URI alone.
    let uri = token_key_uri(&format!("audit-{}", uuid::Uuid::new_v4()));
    let made = SigningKey::create(Path::new(&uri)).unwrap();
    let again = SigningKey::create(Path::new(&uri));
    assert!(
        matches!(&again, Err(e) if e.contains("exists already")),
        "{:?}",
        again.as_ref().err()
    );
    let hsm = SigningKey::load(Path::new(&uri)).unwrap();
    assert_eq!(hsm.key_id, made.key_id);
    assert_ne!(hsm.key_id, file_key.key_id);
    let missing = SigningKey::load(Path::new(&token_key_uri("no-such-key")));
    assert!(
        matches!(&missing, Err(e) if e.contains("does not exist") && !e.contains("12345678")),
        "{:?}",
        missing.as_ref().err()
    );

    let ctx = AuditContext::new(Actor::cli_person("key-officer").unwrap(), None);
    let rotated = keys::rotate(&app.db, &ctx, &file_key, &hsm).await.unwrap();
    append(&app, 3, "i").await;
    let sealed = seal_all(&app.db, &hsm).await.unwrap().unwrap();
    assert_eq!(sealed.tree_size, 11);
    let hsm_vkey = verifier_key_as(&origin, &hsm);
    assert!(verify_checkpoint(sealed.note.as_bytes(), &hsm_vkey).is_ok());
    // Go's note package checks the token's signatures.
    let (ok, out) = go(&[
        "checkpoint",
        "--vkey",
        &hsm_vkey,
        "--note",
        &write(dir.path(), "hsm.note", &sealed.note),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = go(&[
        "signed-by",
        "--signer",
        &verifier_key(&file_key),
        "--signer",
        &hsm_vkey,
        "--note",
        &write(dir.path(), "statement", &rotated.statement),
    ]);
    assert!(ok, "{out}");
    // A PIN that is wrong: refused, and not said (on a token this process
    // never logged into: a login holds for all of a process's sessions).
    let pin = dir.path().join("wrong-pin");
    std::fs::write(&pin, "00000000\n").unwrap();
    let wrong = token_key_uri("any")
        .replace("token=kihon4-test", "token=kihon4-locked")
        .replace(
            &format!(
                "pin-source=file:{}",
                std::env::var("KIHON4_TEST_PKCS11_PIN_FILE").unwrap()
            ),
            &format!("pin-source=file:{}", pin.display()),
        );
    let refused = SigningKey::load(Path::new(&wrong));
    assert!(
        matches!(&refused, Err(e) if e.contains("logging in") && !e.contains("00000000")),
        "{:?}",
        refused.as_ref().err()
    );
}

async fn a_rotation_racing_sealers_leaves_no_later_tree_to_the_retired_key(backend: Backend) {
    use kihon4_core::audit_export::SigningKey;
    use kihon4_core::audit_log::keys;
    use kihon4_core::audit_log::note::key_id_as;
    use kihon4_core::audit_log::verify::verify_export_against;
    use kihon4_core::error::CoreError;
    use std::sync::Arc;
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(app.audit_key());
    let origin = old.log_origin().to_owned();
    append(&app, 20, "pre").await;
    seal_all(&app.db, &old).await.unwrap().unwrap();
    let new = SigningKey::create(&dir.path().join("new.pem")).unwrap();
    // Writers that seal with the old key, round after round, while the
    // key officer rotates: the rotation comes in between their rounds.
    let sealers: Vec<_> = (0..2)
        .map(|w| {
            let (db, key) = (app.db.clone(), old.clone());
            let app_db = app.db.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                for round in 0..25 {
                    let ctx = AuditContext::new(Actor::worker(), None);
                    let mut batch = Batch::default();
                    for i in 0..3 {
                        batch.push(
                            &ctx,
                            AuditEvent::new("test.raced", "test", Some(format!("{w}-{round}-{i}"))),
                        );
                    }
                    let txn = kihon4_core::db::begin_write(&app_db).await.unwrap();
                    append_batch(&txn, batch).await.unwrap();
                    txn.commit().await.unwrap();
                    match seal(&db, &key, 1_000).await {
                        Ok(_) => {}
                        Err(CoreError::SigningKey(_)) => refused += 1,
                        Err(e) => panic!("sealing failed: {e}"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    let ctx = AuditContext::new(Actor::cli_person("key-officer").unwrap(), None);
    let rotated = keys::rotate(&app.db, &ctx, &old, &new).await.unwrap();
    let mut refused = 0;
    for s in sealers {
        refused += s.await.unwrap();
    }
    assert!(
        refused > 0,
        "no sealing round came after the rotation: the race was not run"
    );
    app.sequenced().await;
    seal_all(&app.db, &new).await.unwrap().unwrap();

    // Every checkpoint up to the rotation is the old key's, every later one
    // the new key's, and an auditor with the old key alone agrees.
    let (old_id, new_id) = (
        format!("{:08x}", key_id_as(&origin, &old)),
        format!("{:08x}", key_id_as(&origin, &new)),
    );
    let checkpoints = audit_log_checkpoints::Entity::find()
        .order_by_asc(audit_log_checkpoints::Column::TreeSize)
        .all(&app.db)
        .await
        .unwrap();
    for c in &checkpoints {
        let expected = if (c.tree_size as u64) <= rotated.rotation.retired_after {
            &old_id
        } else {
            assert!(
                c.tree_size >= rotated.seq,
                "a tree between the two keys was signed"
            );
            &new_id
        };
        assert_eq!(&c.key_id, expected, "checkpoint of {}", c.tree_size);
    }
    let export = canonicals(&app).await.join("\n") + "\n";
    let notes: Vec<(String, Vec<u8>)> = checkpoints
        .iter()
        .map(|c| (c.tree_size.to_string(), c.note.clone().into_bytes()))
        .collect();
    let checked =
        verify_export_against(export.as_bytes(), &notes, &verifier_key(&old), |_| {}).unwrap();
    assert_eq!(checked.matched.len(), checkpoints.len());
}
