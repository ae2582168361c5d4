//! An existing customer goes from import to an active Mynaportal consent
//! with no manual step but their own: `kihon4 customers import`, `kihon4
//! consent-requests send --all-without-consent`, the email in the mail drop,
//! the landing page and its button, the holder's decision on (the
//! simulator's) Mynaportal, the signed callback to `kihon4 serve`, and the
//! consent registered with the provider by the worker.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::web;
use kihon4_core::auth::Role;
use kihon4_test_support::{Backend, fresh_database};
use serde_json::{Value, json};

use crate::process::{Running, SECRET, free_port, kihon4, token};

/// The landing link in an email of the mail drop sent to `to`.
fn link_in_drop(dir: &std::path::Path, to: &str, base: &str) -> Option<String> {
    for entry in std::fs::read_dir(dir).ok()? {
        let raw = std::fs::read(entry.ok()?.path()).ok()?;
        if !String::from_utf8_lossy(&raw).contains(&format!("To: {to}")) {
            continue;
        }
        return kihon4_test_support::mail::landing_link(&raw, base);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_imported_customer_consents_on_mynaportal_with_one_click() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Sqlite, d).await;
    let sim = web::Data::new(
        kihon4_sim::Simulator::open(kihon4_sim::SimSettings {
            data_dir: d.join("sim"),
            api_key: None,
            sim_routes_public: false,
        })
        .await
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kihon4_sim::server(sim.clone(), listener).unwrap());
    kihon4_sim::start_callbacks(&sim);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_PROVIDER_URL", format!("{sim_base}/")),
        ("KIHON4_PROVIDER_API_KEY", "e2e-provider-key".to_owned()),
        ("KIHON4_PROVIDER_ISSUER", "kihon4-sim".to_owned()),
        ("KIHON4_PUBLIC_BASE_URL", format!("{base}/")),
        (
            "KIHON4_TRUST_ANCHORS",
            d.join("sim/ca.pem").to_str().unwrap().to_owned(),
        ),
        (
            "KIHON4_MAIL_DROP_DIR",
            d.join("mail").to_str().unwrap().to_owned(),
        ),
    ];
    let out = kihon4(d, &envs).arg("migrate").output().unwrap();
    assert!(out.status.success());

    // The core system's export, imported.
    let csv = d.join("existing.csv");
    std::fs::write(
        &csv,
        "external_ref,email,locale,name,address,birth_date,gender\n\
         EX-1,ex1@example.jp,ja,小林花子,東京都新宿区西新宿2-8-1,1988-08-08,2\n\
         EX-2,ex2@example.jp,en,中村三郎,愛知県名古屋市中区三の丸3-1-2,1970-07-07,1\n",
    )
    .unwrap();
    let out = kihon4(d, &envs)
        .args(["customers", "import"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the provider's issuer no decision could arrive: nobody is asked.
    let no_issuer: Vec<_> = envs
        .iter()
        .filter(|(k, _)| *k != "KIHON4_PROVIDER_ISSUER")
        .cloned()
        .collect();
    let out = kihon4(d, &no_issuer)
        .args(["consent-requests", "send", "--all-without-consent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KIHON4_PROVIDER_ISSUER"), "{err}");

    // Everyone without consent is asked; asking again asks nobody twice.
    let out = kihon4(d, &envs)
        .args(["consent-requests", "send", "--all-without-consent"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 asked"), "{said}");
    let out = kihon4(d, &envs)
        .args(["consent-requests", "send", "--all-without-consent"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 customer(s) without consent"));
    let out = kihon4(d, &envs)
        .args(["consent-requests", "send"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "says what is meant");

    // The service sends the emails into the mail drop.
    let mut service = Running::start_at(d, "serve", &envs, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        if let Some(link) = link_in_drop(&d.join("mail"), "ex1@example.jp", &base) {
            break link;
        }
        if Instant::now() >= deadline {
            let files: Vec<String> = std::fs::read_dir(d.join("mail"))
                .map(|r| {
                    r.filter_map(|e| e.ok())
                        .map(|e| {
                            String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let db = kihon4_core::db::connect(&url, 1).await.unwrap();
            let outbox = kihon4_core::notices::outbox::pending_rows(&db)
                .await
                .unwrap();
            let outbox: Vec<_> = outbox
                .iter()
                .map(|r| (r.kind.clone(), r.status.clone(), r.last_error.clone()))
                .collect();
            panic!(
                "no email with the link: {} files, outbox {outbox:?}\n{}",
                files.len(),
                service.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The customer's one click.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let went = browser
        .post(format!("{link}/start"))
        .header("cookie", cookie)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(went.status(), 303);
    let consent_url = went.headers()["location"].to_str().unwrap().to_owned();
    let provider_request = consent_url.rsplit('/').next().unwrap();

    // On Mynaportal, the holder reads their card and consents.
    let holder: Value = reqwest::Client::new()
        .post(format!("{sim_base}/sim/persons"))
        .json(&json!({"basic4": {"name": "小林花子", "address": "東京都新宿区西新宿2-8-1", "birth_date": "1988-08-08", "gender": "2"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .post(format!(
            "{sim_base}/sim/mynaportal/{provider_request}/decide"
        ))
        .json(&json!({"person_id": holder["person_id"], "decision": "granted"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    // The callback reaches kihon4; the worker registers the consent.
    let operator = token(&[Role::Operator]);
    let http = reqwest::Client::new();
    let found: Value = http
        .get(format!("{base}/v1/customers?external_ref=EX-1"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = found["items"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let consent = loop {
        let consents: Value = http
            .get(format!("{base}/v1/customers/{id}/consents"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let first = consents["items"][0].clone();
        if first["status"] == "active" && first["registration"] == "registered" {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "not yet: {consents}\n{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(consent["channel"], "mynaportal");
    assert_eq!(consent["cert_serial"], holder["cert_serial"]);
    // The receipt follows in the mail drop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(d.join("mail")).unwrap().count() < 3 {
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    service.signal("TERM");
    assert!(service.wait(Duration::from_secs(30)).await.success());
}
