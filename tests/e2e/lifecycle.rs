//! Starting, refusing to start, and stopping.

use std::time::Duration;

use kihon4_core::auth::Role;
use kihon4_core::domain::my_number::with_check_digit;
use kihon4_test_support::{Backend, both, fresh_database};
use serde_json::{Value, json};

use crate::process::{Running, SECRET, kihon4, token};

#[test]
fn bad_configuration_is_reported_at_once_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = kihon4(
        dir.path(),
        &[
            ("KIHON4_LISTEN", "nowhere".into()),
            ("KIHON4_ROLE", "bank".into()),
            ("KIHON4_DATABASE_URL", "mysql://db".into()),
            ("KIHON4_SMTP_URL", "ftp://user:hunter2@mail".into()),
        ],
    )
    .arg("api")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "KIHON4_LISTEN",
        "KIHON4_ROLE",
        "KIHON4_DATABASE_URL",
        "KIHON4_SMTP_URL",
        "KIHON4_JWT_SECRET",
    ] {
        assert!(err.contains(name), "{name} not reported:\n{err}");
    }
    assert!(!err.contains("hunter2"));

    let out = kihon4(dir.path(), &[])
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = kihon4(dir.path(), &[])
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = kihon4(dir.path(), &[])
        .args(["token", "issue", "--role", "king"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_serves_logs_no_personal_data_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Running::start(dir.path(), "serve", &[]).await;
    // The token comes from the binary, for the secret it generated.
    let out = kihon4(dir.path(), &[])
        .args([
            "token", "issue", "--role", "operator", "--ttl", "10m", "--sub", "teller-7",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(std::fs::read_to_string(dir.path().join("data/jwt-secret")).is_ok());

    let http = reqwest::Client::new();
    let body = json!({
        "external_ref": "E2E-1", "email": "hanako.suzuki@example.jp",
        "basic4": {"name": "鈴木花子", "address": "大阪府大阪市北区梅田1-1", "birth_date": "1975-05-05", "gender": "2"}
    });
    let res = http
        .post(format!("{}/v1/customers", serve.base))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let my_number = with_check_digit("43210987654");
    let res = http
        .post(format!("{}/v1/customers", serve.base))
        .bearer_auth(&token)
        .json(&json!({"external_ref": my_number, "email": "x@example.jp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let ready: Value = http
        .get(format!("{}/readyz", serve.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");

    serve.signal("TERM");
    let status = serve.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}");
    let log = serve.log_text();
    assert!(
        log.contains("\"request_id\""),
        "log lines carry the request id:\n{log}"
    );
    assert!(
        log.contains("worker stopped") && log.contains("\"stopped\""),
        "{log}"
    );
    for secret in [
        "鈴木",
        "梅田",
        "1975-05-05",
        "hanako.suzuki",
        my_number.as_str(),
        token.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "the log holds personal data or a token"
        );
    }
    for line in log.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
    }
}

async fn refuses_a_database_behind_its_migrations(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let envs = [
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.into()),
    ];
    for role in ["api", "worker", "serve"] {
        let out = kihon4(dir.path(), &envs).arg(role).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{role}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run `kihon4 migrate`"), "{role}: {err}");
    }
    let out = kihon4(dir.path(), &envs).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = kihon4(dir.path(), &envs).arg("migrate").output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 migration(s) applied"));

    let mut api = Running::start(dir.path(), "api", &envs).await;
    let res = reqwest::get(format!("{}/readyz", api.base)).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/customers", api.base))
        .bearer_auth(token(&[Role::Operator]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    api.signal("INT");
    assert!(api.wait(Duration::from_secs(20)).await.success());

    let mut worker = Running::start(dir.path(), "worker", &envs).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !worker.log_text().contains("worker started") {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not start:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(20)).await.success());
    assert!(worker.log_text().contains("worker stopped"));
}

both!(refuses_a_database_behind_its_migrations);

/// RS256 and ES256: tokens checked with public keys, issued by the CLI with
/// the private key; keys made by OpenSSL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_tokens_from_openssl_keys() {
    for (alg, genpkey) in [
        (
            "RS256",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
        ),
        (
            "ES256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str| dir.path().join(name);
        for (private, public) in [("issuer.key", "issuer.pub"), ("other.key", "other.pub")] {
            let ok = std::process::Command::new("openssl")
                .arg("genpkey")
                .args(genpkey)
                .arg("-out")
                .arg(key(private))
                .status()
                .expect("openssl runs");
            assert!(ok.success());
            let ok = std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(key(private))
                .arg("-out")
                .arg(key(public))
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let envs = [
            ("KIHON4_JWT_ALGORITHM", alg.to_owned()),
            (
                "KIHON4_JWT_PUBLIC_KEYS",
                key("issuer.pub").display().to_string(),
            ),
            ("KIHON4_JWT_ISSUER", "https://idp.example.jp".to_owned()),
            ("KIHON4_JWT_AUDIENCE", "kihon4".to_owned()),
        ];
        let issue = |private: &str| {
            let out = kihon4(dir.path(), &envs)
                .args(["token", "issue", "--role", "operator", "--private-key"])
                .arg(key(private))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{alg}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let good = issue("issuer.key");
        let forged = issue("other.key");
        let without_key = kihon4(dir.path(), &envs)
            .args(["token", "issue", "--role", "operator"])
            .output()
            .unwrap();
        assert_eq!(
            without_key.status.code(),
            Some(2),
            "{alg}: a private key is needed"
        );

        let api = Running::start(dir.path(), "api", &envs).await;
        let http = reqwest::Client::new();
        let get = |token: String| {
            http.get(format!("{}/v1/customers", api.base))
                .bearer_auth(token)
                .send()
        };
        assert_eq!(get(good).await.unwrap().status(), 200, "{alg}");
        assert_eq!(
            get(forged).await.unwrap().status(),
            401,
            "{alg}: signed by another key"
        );
        // An HS256 token made with the public key's text as secret (key confusion) is refused.
        let public_pem = std::fs::read_to_string(key("issuer.pub")).unwrap();
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "x", "roles": ["admin"], "exp": jsonwebtoken::get_current_timestamp() + 600,
                    "iss": "https://idp.example.jp", "aud": "kihon4"}),
            &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            get(confused).await.unwrap().status(),
            401,
            "{alg}: algorithm confusion"
        );
    }
    // A public key that does not fit the algorithm is a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let ec = dir.path().join("ec.key");
    assert!(
        std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out"
            ])
            .arg(&ec)
            .status()
            .unwrap()
            .success()
    );
    let pubkey = dir.path().join("ec.pub");
    assert!(
        std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&ec)
            .arg("-out")
            .arg(&pubkey)
            .status()
            .unwrap()
            .success()
    );
    let out = kihon4(
        dir.path(),
        &[
            ("KIHON4_JWT_ALGORITHM", "RS256".into()),
            ("KIHON4_JWT_PUBLIC_KEYS", pubkey.display().to_string()),
        ],
    )
    .arg("api")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KIHON4_JWT_PUBLIC_KEYS"));
}

/// `kihon4 sim` runs without kihon4's configuration, serves the protocol and
/// stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_runs_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::process::free_port();
    // A setting that would stop `kihon4 api` does not concern the simulator.
    let mut child = kihon4(
        dir.path(),
        &[("KIHON4_DATABASE_URL", "mysql://not-used".into())],
    )
    .args([
        "sim",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(dir.path().join("sim"))
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut ca = None;
    for _ in 0..300 {
        if let Ok(res) = reqwest::get(format!("{base}/v1/ca")).await {
            ca = Some(res.bytes().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = ca.expect("the simulator answers");
    assert!(!ca.is_empty());
    assert!(dir.path().join("sim/ca.pem").exists() && dir.path().join("sim/sim.db").exists());
    let unauthorised = reqwest::get(format!("{base}/v1/crl")).await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    assert!(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Email templates are checked before anything starts: a folder that lacks
/// one, or holds a broken one, stops the process and says which.
#[test]
fn missing_or_broken_email_templates_stop_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = kihon4(
        dir.path(),
        &[("KIHON4_EMAIL_TEMPLATES_DIR", empty.to_str().unwrap().into())],
    )
    .arg("api")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lacks the email templates") && err.contains("consent_receipt.ja.subject"),
        "{err}"
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/email");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        broken.join("consent_withdrawn.en.txt"),
        "Dear {{ customer.nmae }},\n",
    )
    .unwrap();
    let out = kihon4(
        dir.path(),
        &[(
            "KIHON4_EMAIL_TEMPLATES_DIR",
            broken.to_str().unwrap().into(),
        )],
    )
    .arg("worker")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consent_withdrawn.en") && err.contains("does not render"),
        "{err}"
    );
}

/// `kihon4 demo` runs the whole loop with no configuration and says what happened.
#[test]
fn the_demo_runs_the_whole_loop_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = kihon4(dir.path(), &[])
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "4 of 5 certificates are in the CRL.",
        "Answers applied: changed 2, deceased 1, revoked 1.",
        "DEMO-002: 佐藤花子 / 大阪府大阪市中央区大手前2-1-22 / status active",
        "DEMO-003: 鈴木一子",
        "status deceased",
        "A review waits for a person: DEMO-005, revoked.",
        "its hash chain verifies",
    ] {
        assert!(said.contains(line), "missing {line:?} in:\n{said}");
    }
    let notices = std::fs::read_dir(dir.path().join("demo/mail"))
        .unwrap()
        .count();
    assert_eq!(
        notices, 8,
        "5 receipts, 2 change notices, 1 lost-card notice"
    );
    // Only warnings are logged, and no personal data.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("佐藤花子"), "{log}");
}

/// A schedule the worker cannot keep stops it at start, naming the setting.
#[test]
fn a_schedule_the_worker_cannot_keep_stops_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = kihon4(
        dir.path(),
        &[("KIHON4_SYNC_DETECT_CRON", "0 61 * * * *".into())],
    )
    .arg("worker")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KIHON4_SYNC_DETECT_CRON"), "{err}");
}
