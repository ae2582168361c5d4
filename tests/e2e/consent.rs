//! Consent through the binary: `kihon4 sim` as the provider, `kihon4 serve`
//! configured for it, a resident's OpenSSL signature, and the worker
//! registering the consent by itself.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::auth::Role;
use serde_json::{Value, json};

use crate::process::{Running, SECRET, free_port, kihon4, token};

struct Sim {
    child: Child,
    base: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_sim(dir: &std::path::Path) -> Sim {
    let port = free_port();
    let child = kihon4(dir, &[])
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("sim"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned at once: killed and waited for on every path, panics included.
    let sim = Sim {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..300 {
        if reqwest::get(format!("{}/v1/ca", sim.base)).await.is_ok() {
            return sim;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the simulator did not start");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_consent_is_verified_kept_and_registered_by_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = start_sim(d).await;
    let http = reqwest::Client::new();
    let person: Value = http
        .post(format!("{}/sim/persons", sim.base))
        .json(&json!({"basic4": {"name": "佐藤花子", "address": "北海道札幌市中央区北1条西2-1", "birth_date": "1990-04-01", "gender": "2"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(
        d.join("signer.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        d.join("signer.key"),
        person["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();

    let envs = [
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_PROVIDER_URL", format!("{}/", sim.base)),
        ("KIHON4_PROVIDER_API_KEY", "e2e-provider-key".to_owned()),
        (
            "KIHON4_TRUST_ANCHORS",
            d.join("sim/ca.pem").to_str().unwrap().to_owned(),
        ),
        ("KIHON4_INSTITUTION_NAME", "みなと信用金庫".to_owned()),
    ];
    let app = Running::start(d, "serve", &envs).await;
    let operator = token(&[Role::Operator]);
    let customer: Value = http
        .post(format!("{}/v1/customers", app.base))
        .bearer_auth(&operator)
        .json(&json!({"external_ref": "E2E-1", "email": "hanako@example.jp"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Value = http
        .get(format!("{}/v1/consent-texts", app.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = texts["items"][0]["text"].as_str().unwrap();
    assert!(text.contains("みなと信用金庫"));
    std::fs::write(d.join("consent.txt"), text).unwrap();
    openssl(
        d,
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            "consent.txt",
            "-signer",
            "signer.pem",
            "-inkey",
            "signer.key",
            "-outform",
            "DER",
            "-out",
            "consent.der",
        ],
    );
    let document = std::fs::read(d.join("consent.der")).unwrap();
    let res = http
        .post(format!(
            "{}/v1/customers/{}/consents",
            app.base,
            customer["id"].as_str().unwrap()
        ))
        .bearer_auth(&operator)
        .json(&json!({
            "text_version": texts["items"][0]["version"],
            "channel": "online_signature",
            "signed_document_b64": B64.encode(&document),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", app.log_text());
    let consent: Value = res.json().await.unwrap();
    assert_eq!(consent["cert_serial"], person["cert_serial"]);

    // The worker registers it within a few ticks.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Value = http
            .get(format!(
                "{}/v1/consents/{}",
                app.base,
                consent["id"].as_str().unwrap()
            ))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if now["registration"] == "registered" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not registered: {now}\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The resident moves; a sync run through the worker brings the record along.
    http.post(format!(
        "{}/sim/persons/{}/events",
        sim.base,
        person["person_id"].as_str().unwrap()
    ))
    .json(&json!({"kind": "move", "basic4": {"address": "北海道函館市新川町1-1"}}))
    .send()
    .await
    .unwrap();
    let run: Value = http
        .post(format!("{}/v1/sync/runs", app.base))
        .bearer_auth(&operator)
        .json(&json!({"scope": "all"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: Value = http
            .get(format!(
                "{}/v1/sync/runs/{}",
                app.base,
                run["id"].as_str().unwrap()
            ))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if now["status"] == "completed" {
            assert_eq!(now["counts"]["changed"], 1, "{now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not complete: {now}\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let record: Value = http
        .get(format!(
            "{}/v1/customers/{}",
            app.base,
            customer["id"].as_str().unwrap()
        ))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["basic4"]["address"], "北海道函館市新川町1-1");
    // The receipt and the change notice, in the embedded default's mail drop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let drops = std::fs::read_dir(d.join("data/mail"))
            .map(|r| r.count())
            .unwrap_or(0);
        if drops == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{drops} notices in the mail drop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // With the service stopped, the CLI carries a run to its end by itself.
    let mut app = app;
    app.signal("TERM");
    assert!(app.wait(Duration::from_secs(30)).await.success());
    http.post(format!(
        "{}/sim/persons/{}/events",
        sim.base,
        person["person_id"].as_str().unwrap()
    ))
    .json(&json!({"kind": "rename", "basic4": {"name": "佐藤花"}}))
    .send()
    .await
    .unwrap();
    http.post(format!("{}/sim/crl/publish", sim.base))
        .send()
        .await
        .unwrap();
    let out = kihon4(d, &envs)
        .args(["sync", "run-once", "--scope", "revoked"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("completed: 1 customer(s): changed 1"),
        "{said}"
    );

    // Nothing personal in the log: not the name, the address or the email.
    let log = app.log_text() + &String::from_utf8_lossy(&out.stderr);
    for secret in [
        "佐藤花子",
        "北海道札幌市",
        "hanako@example.jp",
        "e2e-provider-key",
    ] {
        assert!(!log.contains(secret), "{secret} logged");
    }
}
