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

use crate::process::{Running, SECRET, free_port, kihon4, token};

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

fn verify_log(d: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err) = output(kihon4(d, &[]).args(["audit", "verify-log"]).args(args));
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
    let (code, out, err) = output(
        kihon4(d, &[])
            .args(["audit", "verify-consistency", "--log-key", &log_vkey])
            .arg("--old")
            .arg(d.join("kept.note"))
            .arg("--new")
            .arg(d.join("newer.note"))
            .arg("--proof")
            .arg(d.join("consistency.json")),
    );
    assert_eq!(code, 0, "{out}{err}");
    // The newer checkpoint given as the older: refused.
    let (code, out, err) = output(
        kihon4(d, &[])
            .args(["audit", "verify-consistency", "--log-key", &log_vkey])
            .arg("--old")
            .arg(d.join("newer.note"))
            .arg("--new")
            .arg(d.join("kept.note"))
            .arg("--proof")
            .arg(d.join("consistency.json")),
    );
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
    let (code, out, err) = output(
        kihon4(d, &[])
            .args(["audit", "verify-customer", "--log-key", &log_vkey])
            .arg(d.join("customer.json")),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 event(s)"), "{out}");
    std::fs::write(
        d.join("changed-customer.json"),
        page.replacen("WIT-LATER", "WIT-OTHER", 1),
    )
    .unwrap();
    let (code, out, err) = output(
        kihon4(d, &[])
            .args(["audit", "verify-customer", "--log-key", &log_vkey])
            .arg(d.join("changed-customer.json")),
    );
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
    let kept = d.join("kept.note");
    let (code, out) = verify_log(
        d,
        &[
            export.to_str().unwrap(),
            "--log-key",
            &log_vkey,
            "--checkpoint",
            kept.to_str().unwrap(),
            "--witness",
            &witness_vkey,
            "--quorum",
            "1",
        ],
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
        &[
            export.to_str().unwrap(),
            "--log-key",
            &log_vkey,
            "--checkpoint",
            d.join("bare.note").to_str().unwrap(),
            "--witness",
            &witness_vkey,
        ],
    );
    assert_eq!(code, 1, "{out}");
    // A changed export: refused against the kept checkpoint.
    let text = std::fs::read_to_string(&export).unwrap();
    let changed = text.replacen("WIT-2", "WIT-9", 1);
    assert_ne!(changed, text, "the export names the customers");
    std::fs::write(d.join("changed.jsonl"), changed).unwrap();
    let (code, out) = verify_log(
        d,
        &[
            d.join("changed.jsonl").to_str().unwrap(),
            "--log-key",
            &log_vkey,
            "--checkpoint",
            kept.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the history was changed"), "{out}");
    // Bad usage: exit 2.
    let (code, _) = verify_log(
        d,
        &[
            export.to_str().unwrap(),
            "--log-key",
            "nonsense",
            "--checkpoint",
            kept.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
}
