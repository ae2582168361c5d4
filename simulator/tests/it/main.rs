//! The simulator over HTTP, with OpenSSL as the independent judge of what it signs.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use actix_web::web;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_sim::{SimSettings, Simulator};

mod client;
use der::Decode;
use serde_json::{Value, json};

struct TestSim {
    base: String,
    http: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
}

async fn spawn(dir: &Path, api_key: Option<&str>) -> TestSim {
    let sim = Simulator::open(SimSettings {
        data_dir: dir.to_path_buf(),
        api_key: api_key.map(str::to_owned),
        sim_routes_public: false,
    })
    .await
    .expect("simulator opens");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sim = web::Data::new(sim);
    kihon4_sim::start_callbacks(&sim);
    let server = kihon4_sim::server(sim, listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    TestSim {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        handle,
    }
}

impl TestSim {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn ca_pem(&self, dir: &Path) -> std::path::PathBuf {
        let der = self.get("/v1/ca").await.bytes().await.unwrap();
        std::fs::write(dir.join("ca.der"), &der).unwrap();
        openssl(
            dir,
            &["x509", "-inform", "DER", "-in", "ca.der", "-out", "ca.pem"],
        );
        dir.join("ca.pem")
    }
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn taro() -> Value {
    json!({"basic4": {
        "name": "山田 太郎", "address": "東京都千代田区霞が関1-1-1",
        "birth_date": "1980-02-17", "gender": "1"
    }})
}

async fn problem(res: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("https://kihon4.dev/sim/problems/{slug}")
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residents_get_certificates_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let res = sim.post("/sim/persons", &taro()).await;
    assert_eq!(res.status(), 201);
    let person: Value = res.json().await.unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    sim.ca_pem(dir.path()).await;
    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let ca_text = openssl(dir.path(), &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(
        ca_text.contains("sha256WithRSAEncryption") && ca_text.contains("Public-Key: (2048 bit)")
    );
    assert!(ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign, CRL Sign"));
    assert!(ca_text.contains("X509v3 Subject Key Identifier"));

    let pem = person["certificate_pem"].as_str().unwrap();
    let der = der::Document::from_pem(pem).unwrap().1;
    let cert = kihon4_core::jpki::parse_signing_certificate(der.as_bytes()).unwrap();
    assert_eq!(cert.basic4.name.as_str(), "山田 太郎");
    assert_eq!(cert.basic4.birth_date.to_iso(), "1980-02-17");
    assert_eq!(cert.serial.as_str(), person["cert_serial"]);
    let partition = cert.crl_partition.unwrap();
    assert_eq!(
        (partition.prefecture.as_str(), partition.city.as_str()),
        ("東京都", "千代田区")
    );
    assert_eq!(cert.prefecture.as_deref(), Some("東京都"));
    // Valid to the fifth birthday after issue, at the end of that day in Japan.
    let fifth = kihon4_sim::residents::fifth_birthday_after(
        chrono::NaiveDate::from_ymd_opt(1980, 2, 17).unwrap(),
        chrono::Utc::now().date_naive(),
    );
    assert_eq!(
        cert.not_after.format("%Y-%m-%d %H:%M:%S").to_string(),
        format!("{fifth} 14:59:59")
    );
    // The key plays the card: it matches the certificate.
    std::fs::write(
        dir.path().join("leaf.key"),
        person["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let from_key = openssl(dir.path(), &["pkey", "-in", "leaf.key", "-pubout"]);
    let from_cert = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-pubkey"],
    );
    assert_eq!(from_key, from_cert);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_openssl_cms_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap().to_owned();
    let ca_before = sim.get("/v1/ca").await.bytes().await.unwrap();
    sim.handle.stop(true).await;

    // A new simulator on the same folder: same CA, same resident.
    let sim = spawn(dir.path(), None).await;
    assert_eq!(sim.get("/v1/ca").await.bytes().await.unwrap(), ca_before);
    let again: Value = sim
        .get(&format!("/sim/persons/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["cert_serial"], person["cert_serial"]);
    assert_eq!(again["status"], "alive");

    let text = "私は、基本4情報の提供に同意します。\n";
    let res = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let signed: Value = res.json().await.unwrap();
    let der = B64.decode(signed["cms_der_b64"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("signed.der"), &der).unwrap();
    sim.ca_pem(dir.path()).await;
    let content = openssl(
        dir.path(),
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
        ],
    );
    assert_eq!(content, text);
    let structure = openssl(
        dir.path(),
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            "signed.der",
        ],
    );
    for attribute in ["contentType", "messageDigest", "signingTime", "sha256"] {
        assert!(
            structure.contains(attribute),
            "{attribute} missing:\n{structure}"
        );
    }
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problems() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), Some("right-key")).await;
    let body = problem(
        sim.post("/sim/persons", &json!({"basic4": {"name": "", "address": "東京都", "birth_date": "1980-13-01", "gender": "5"}})).await,
        422,
        "validation",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["basic4.name", "basic4.birth_date", "basic4.gender"]
    );
    problem(
        sim.post("/sim/persons", &json!({"basic4": {}, "extra": 1}))
            .await,
        400,
        "bad-request",
    )
    .await;
    let res = sim
        .http
        .post(format!("{}/sim/persons", sim.base))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    problem(res, 400, "bad-request").await;
    let res = sim
        .http
        .post(format!("{}/sim/persons", sim.base))
        .body("x")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    problem(res, 415, "unsupported-media-type").await;
    problem(sim.get("/sim/persons/nobody").await, 404, "not-found").await;
    problem(
        sim.post("/sim/persons/nobody/sign", &json!({"content_b64": "aGk="}))
            .await,
        404,
        "not-found",
    )
    .await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    problem(
        sim.post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": "***"}),
        )
        .await,
        400,
        "bad-request",
    )
    .await;

    // Provider routes need the API key; the CA certificate does not.
    assert_eq!(sim.get("/v1/ca").await.status(), 200);
    problem(sim.get("/v1/crl").await, 401, "unauthorized").await;
    let wrong = sim
        .http
        .get(format!("{}/v1/crl", sim.base))
        .bearer_auth("wrong-key")
        .send()
        .await
        .unwrap();
    problem(wrong, 401, "unauthorized").await;
    sim.handle.stop(true).await;
}

fn osaka() -> Value {
    json!({"basic4": {
        "name": "鈴木 花子", "address": "大阪府大阪市北区梅田1-1",
        "birth_date": "1990-07-07", "gender": "2"
    }})
}

async fn crl_der(sim: &TestSim, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut req = sim
        .http
        .get(format!("{}{path}", sim.base))
        .bearer_auth("any-key");
    if let Some(tag) = etag {
        req = req.header("if-none-match", tag);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_events_revoke_with_their_reasons_and_crls_list_them() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let first = crl_der(&sim, "/v1/crl", None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/pkix-crl");
    let first_etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        crl_der(&sim, "/v1/crl", Some(&first_etag)).await.status(),
        304
    );

    let mover: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let loser: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    let (mover_id, loser_id) = (
        mover["person_id"].as_str().unwrap(),
        loser["person_id"].as_str().unwrap(),
    );

    let moved = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "move", "basic4": {"address": "大阪府大阪市中央区大手前1-1"}}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(moved["revoked_serial"], mover["cert_serial"]);
    assert_eq!(moved["reason"], 3);
    assert_ne!(moved["cert_serial"], mover["cert_serial"]);
    let new_pem = moved["certificate_pem"].as_str().unwrap();
    let new_cert = kihon4_core::jpki::parse_signing_certificate(
        der::Document::from_pem(new_pem).unwrap().1.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        new_cert.basic4.address.as_str(),
        "大阪府大阪市中央区大手前1-1"
    );
    assert_eq!(new_cert.basic4.name.as_str(), "山田 太郎");
    assert_eq!(new_cert.crl_partition.unwrap().city, "大阪市");

    let lost: Value = sim
        .post(
            &format!("/sim/persons/{loser_id}/events"),
            &json!({"kind": "card_lost"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lost["reason"], 6);
    assert_eq!(lost["cert_serial"], Value::Null);
    problem(
        sim.post(
            &format!("/sim/persons/{loser_id}/sign"),
            &json!({"content_b64": "aGk="}),
        )
        .await,
        409,
        "no-valid-certificate",
    )
    .await;
    let renewed: Value = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "renew"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renewed["reason"], 4);
    let died: Value = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "death"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(died["reason"], 5);
    assert_eq!(died["revoked_serial"], renewed["cert_serial"]);
    let dead: Value = sim
        .get(&format!("/sim/persons/{mover_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dead["status"], "deceased");
    problem(
        sim.post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "renew"}),
        )
        .await,
        409,
        "no-valid-certificate",
    )
    .await;

    // Not listed until the next publication.
    assert_eq!(
        crl_der(&sim, "/v1/crl", Some(&first_etag)).await.status(),
        304
    );
    let published: Value = sim
        .post("/sim/crl/publish", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["entries"], 4);
    let res = crl_der(&sim, "/v1/crl", Some(&first_etag)).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag, first_etag);
    std::fs::write(dir.path().join("full.crl"), res.bytes().await.unwrap()).unwrap();
    assert_eq!(crl_der(&sim, "/v1/crl", Some(&etag)).await.status(), 304);

    sim.ca_pem(dir.path()).await;
    let text = openssl(
        dir.path(),
        &[
            "crl", "-inform", "DER", "-in", "full.crl", "-CAfile", "ca.pem", "-noout", "-text",
        ],
    );
    let upper = |v: &Value| v.as_str().unwrap().to_ascii_uppercase();
    for (serial, reason) in [
        (upper(&mover["cert_serial"]), "Affiliation Changed"),
        (upper(&loser["cert_serial"]), "Certificate Hold"),
        (upper(&moved["cert_serial"]), "Superseded"),
        (upper(&renewed["cert_serial"]), "Cessation Of Operation"),
    ] {
        let at = text
            .find(&serial)
            .unwrap_or_else(|| panic!("{serial} not listed:\n{text}"));
        assert!(
            text[at..].lines().take(5).any(|l| l.contains(reason)),
            "{serial} should be {reason}:\n{text}"
        );
    }
    let verify = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "crl", "-inform", "DER", "-in", "full.crl", "-CAfile", "ca.pem", "-noout",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("verify OK"),
        "{verify:?}"
    );

    // Partitions: one per municipality, each with its distribution point.
    let partitions: Value = crl_der(&sim, "/v1/crls", None).await.json().await.unwrap();
    let items = partitions["items"].as_array().unwrap();
    let tokyo = items
        .iter()
        .find(|p| {
            p["distribution_point"]
                .as_str()
                .unwrap()
                .contains("CN=千代田区")
        })
        .expect("Tokyo partition");
    let res = crl_der(
        &sim,
        &format!("/v1/crls/{}", tokyo["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(res.headers()["etag"].to_str().unwrap(), tokyo["etag"]);
    std::fs::write(dir.path().join("tokyo.crl"), res.bytes().await.unwrap()).unwrap();
    let text = openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "tokyo.crl",
            "-CAfile",
            "ca.pem",
            "-noout",
            "-text",
        ],
    );
    assert!(text.contains(&upper(&mover["cert_serial"])));
    assert!(
        !text.contains(&upper(&loser["cert_serial"])),
        "Osaka's card is not in Tokyo's CRL"
    );
    assert!(
        text.contains("Issuing Distribution Point: critical"),
        "{text}"
    );
    problem(crl_der(&sim, "/v1/crls/0000", None).await, 404, "not-found").await;
    sim.handle.stop(true).await;

    // A restart keeps the revocations and moves the CRL number on.
    let sim = spawn(dir.path(), None).await;
    let res = crl_der(&sim, "/v1/crl", None).await;
    std::fs::write(dir.path().join("again.crl"), res.bytes().await.unwrap()).unwrap();
    let text = openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "again.crl",
            "-noout",
            "-text",
        ],
    );
    assert_eq!(text.matches("Serial Number:").count(), 4, "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                3"),
        "{text}"
    );
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_events_refuse_what_makes_no_sense() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "wedding"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "kind");
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "move"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "basic4.address");
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "rename", "basic4": {"name": ""}}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "basic4.name");
    problem(
        sim.post("/sim/persons/nobody/events", &json!({"kind": "death"}))
            .await,
        404,
        "not-found",
    )
    .await;
    // Nothing was revoked by any of it.
    let published: Value = sim
        .post("/sim/crl/publish", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["entries"], 0);
    sim.handle.stop(true).await;
}

async fn keyed(
    sim: &TestSim,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = sim
        .http
        .request(method, format!("{}{path}", sim.base))
        .bearer_auth("institution-key");
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

fn subscription() -> Value {
    json!({"consent_id": "consent-1", "granted_at": "2026-11-25T00:00:00Z", "expires_at": "2036-11-26T00:00:00Z"})
}

async fn subscribe(sim: &TestSim, serial: &str) -> reqwest::StatusCode {
    keyed(
        sim,
        reqwest::Method::PUT,
        &format!("/v1/basic4/subscriptions/{serial}"),
        Some(&subscription()),
    )
    .await
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_every_status_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let mut people = Vec::new();
    for _ in 0..6 {
        let p: Value = sim
            .post("/sim/persons", &taro())
            .await
            .json()
            .await
            .unwrap();
        people.push((
            p["person_id"].as_str().unwrap().to_owned(),
            p["cert_serial"].as_str().unwrap().to_owned(),
        ));
    }
    let [still, mover, dead, lost, late, stranger] = people.try_into().unwrap();
    for (_, serial) in [&still, &mover, &dead, &lost, &late] {
        assert_eq!(subscribe(&sim, serial).await, 201);
    }
    let sim = &sim;
    let event = |id: &str, body: Value| {
        let path = format!("/sim/persons/{id}/events");
        async move { sim.post(&path, &body).await }
    };
    let moved: Value = event(
        &mover.0,
        json!({"kind": "move", "basic4": {"address": "北海道札幌市中央区北1条西2丁目"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(event(&dead.0, json!({"kind": "death"})).await.status(), 200);
    assert_eq!(
        event(&lost.0, json!({"kind": "card_lost"})).await.status(),
        200
    );
    assert_eq!(
        event(
            &late.0,
            json!({"kind": "move", "basic4": {"address": "沖縄県那覇市泉崎1-1"}, "reissue": false})
        )
        .await
        .status(),
        200
    );

    let order = [
        &still.1,
        &mover.1,
        &dead.1,
        &lost.1,
        &late.1,
        &stranger.1,
        &"abc123".to_owned(),
    ];
    let body =
        json!({"queries": order.iter().map(|s| json!({"cert_serial": s})).collect::<Vec<_>>()});
    let res = keyed(
        sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&body),
    )
    .await;
    assert_eq!(res.status(), 200);
    let results: Value = res.json().await.unwrap();
    let results = results["results"].as_array().unwrap();
    let got: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["cert_serial"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, &str)> = order
        .iter()
        .map(|s| s.as_str())
        .zip([
            "unchanged",
            "changed",
            "deceased",
            "revoked",
            "awaiting_reissue",
            "not_subscribed",
            "unknown_certificate",
        ])
        .collect();
    assert_eq!(got, expected);
    let changed = &results[1];
    assert_eq!(changed["current_cert_serial"], moved["cert_serial"]);
    assert_eq!(
        changed["changed_on"],
        chrono::Utc::now().date_naive().to_string()
    );
    assert_eq!(
        changed["basic4"]["address"],
        "北海道札幌市中央区北1条西2丁目"
    );
    assert_eq!(changed["basic4"]["name"], "山田 太郎");
    assert_eq!(changed["basic4"]["birth_date"], "1980-02-17");
    assert!(results[2]["changed_on"].is_string());
    assert_eq!(results[3]["reason"], "lost");
    assert!(
        results[0].get("basic4").is_none(),
        "unchanged carries no items"
    );

    // The consent survives the revocation: the new certificate is still subscribed.
    let again = json!({"queries": [{"cert_serial": moved["cert_serial"]}]});
    let res: Value = keyed(
        sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&again),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(res["results"][0]["status"], "unchanged");
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_idempotent_and_batches_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), Some("institution-key")).await;
    let p: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let serial = p["cert_serial"].as_str().unwrap();
    assert_eq!(subscribe(&sim, serial).await, 201);
    assert_eq!(subscribe(&sim, serial).await, 200);
    let path = format!("/v1/basic4/subscriptions/{serial}");
    assert_eq!(
        keyed(&sim, reqwest::Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    assert_eq!(
        keyed(&sim, reqwest::Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    let query = json!({"queries": [{"cert_serial": serial}]});
    let res: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(res["results"][0]["status"], "not_subscribed");

    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            "/v1/basic4/subscriptions/abc123",
            Some(&subscription()),
        )
        .await,
        404,
        "unknown-certificate",
    )
    .await;
    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            "/v1/basic4/subscriptions/00AB",
            Some(&subscription()),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    let backwards = json!({"consent_id": "c", "granted_at": "2030-01-01T00:00:00Z", "expires_at": "2029-01-01T00:00:00Z"});
    problem(
        keyed(&sim, reqwest::Method::PUT, &path, Some(&backwards)).await,
        400,
        "bad-request",
    )
    .await;

    // A consent given before the certificate was revoked is registered; one
    // dated after the revocation cannot have been given with it.
    let lost: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let lost_serial = lost["cert_serial"].as_str().unwrap();
    let res = sim
        .post(
            &format!(
                "/sim/persons/{}/events",
                lost["person_id"].as_str().unwrap()
            ),
            &json!({"kind": "card_lost"}),
        )
        .await;
    assert!(res.status().is_success());
    assert_eq!(subscribe(&sim, lost_serial).await, 201);
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    let late = json!({"consent_id": "consent-2", "granted_at": after, "expires_at": "2036-11-26T00:00:00Z"});
    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            &format!("/v1/basic4/subscriptions/{lost_serial}"),
            Some(&late),
        )
        .await,
        409,
        "certificate-revoked",
    )
    .await;

    let batch = |n: usize| json!({"queries": (0..n).map(|_| json!({"cert_serial": serial})).collect::<Vec<_>>()});
    for n in [0, 1001] {
        let body = problem(
            keyed(
                &sim,
                reqwest::Method::POST,
                "/v1/basic4/queries",
                Some(&batch(n)),
            )
            .await,
            400,
            "bad-request",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "queries");
    }
    assert_eq!(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&batch(1000))
        )
        .await
        .status(),
        200
    );
    let bad = json!({"queries": [{"cert_serial": serial}, {"cert_serial": serial}, {"cert_serial": "XYZ"}]});
    let body = problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&bad),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "queries[2].cert_serial");
    let unknown_field = json!({"queries": [{"cert_serial": serial, "extra": true}]});
    problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&unknown_field),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    let res = sim
        .http
        .post(format!("{}/v1/basic4/queries", sim.base))
        .json(&query)
        .send()
        .await
        .unwrap();
    problem(res, 401, "unauthorized").await;
    sim.handle.stop(true).await;
}

fn ocsp_check(dir: &Path, sim: &TestSim, cert: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "ocsp", "-issuer", "ca.pem", "-cert", cert, "-CAfile", "ca.pem", "-url",
        ])
        .arg(format!("{}/v1/ocsp", sim.base))
        .args(["-header", "Authorization=Bearer institution-key"])
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_says_good_then_revoked_and_unknown_for_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    sim.ca_pem(dir.path()).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let sim_ref = &sim;
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("leaf.pem: good"), "{answer}");
    assert!(
        !answer.contains("WARNING: no nonce"),
        "the nonce is echoed: {answer}"
    );

    let id = person["person_id"].as_str().unwrap();
    let moved = sim
        .post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "move", "basic4": {"address": "京都府京都市左京区1"}}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    // OCSP knows at once, without waiting for the next CRL.
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("leaf.pem: revoked"), "{answer}");
    assert!(answer.contains("Reason: affiliationChanged"), "{answer}");

    // A certificate this CA never issued (same serial space, other CA).
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "1",
            "-subj",
            "/CN=stranger",
        ],
    );
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "other.pem"));
    assert!(answer.contains("other.pem: unknown"), "{answer}");

    // Garbage gets an OCSP malformedRequest, not a crash.
    let res = sim
        .http
        .post(format!("{}/v1/ocsp", sim.base))
        .bearer_auth("k")
        .header("content-type", "application/ocsp-request")
        .body(vec![0x30, 0x03, 0x02, 0x01, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        [0x30, 0x03, 0x0a, 0x01, 0x01]
    );
    let res = sim
        .http
        .post(format!("{}/v1/ocsp", sim.base))
        .bearer_auth("k")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(res, 415, "unsupported-media-type").await;
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_make_bad_days_on_provider_routes_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let put = |body: Value| {
        sim.http
            .put(format!("{}/sim/faults", sim.base))
            .json(&body)
            .send()
    };
    let query = json!({"queries": [{"cert_serial": "abc"}]});

    assert_eq!(
        put(json!({"maintenance": true, "maintenance_retry_after_s": 7}))
            .await
            .unwrap()
            .status(),
        200
    );
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.headers()["retry-after"], "7");
    problem(res, 503, "maintenance").await;
    // Simulator control still answers during maintenance.
    assert_eq!(
        sim.post("/sim/persons", &json!({"basic4": {}}))
            .await
            .status(),
        422
    );

    put(json!({"error_rate": 1.0})).await.unwrap();
    for _ in 0..10 {
        let res = keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&query),
        )
        .await;
        match res.status().as_u16() {
            500 => {}
            429 => assert_eq!(res.headers()["retry-after"], "1"),
            other => panic!("unexpected {other}"),
        }
    }

    put(json!({"malformed_rate": 1.0})).await.unwrap();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "cut short: {text}"
    );

    put(json!({"latency_ms": 300})).await.unwrap();
    let started = std::time::Instant::now();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    for bad in [
        json!({"error_rate": 2}),
        json!({"latency_ms": 100000}),
        json!({"colour": "red"}),
    ] {
        let res = put(bad).await.unwrap();
        assert_eq!(res.status(), 400);
    }
    put(json!({})).await.unwrap();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "unknown_certificate");
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_checks_answer_and_every_check_is_counted_by_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let alive: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let gone: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    let gone_id = gone["person_id"].as_str().unwrap();
    assert_eq!(
        sim.post(
            &format!("/sim/persons/{gone_id}/events"),
            &json!({"kind": "death"})
        )
        .await
        .status(),
        200
    );

    let ids = json!({"certificate_ids": [alive["certificate_id"], gone["certificate_id"]]});
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/certificates/status",
        Some(&ids),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "good");
    assert_eq!(body["results"][1]["status"], "revoked");
    assert_eq!(body["results"][1]["reason"], "cessation_of_operation");
    assert!(body["results"][0]["checked_at"].is_string());

    // One OCSP check for signature verification.
    std::fs::write(
        dir.path().join("leaf.pem"),
        alive["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    sim.ca_pem(dir.path()).await;
    let sim_ref = &sim;
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("leaf.pem: good"), "{answer}");

    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let path = format!(
        "/v1/checks?from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let counts: Value = keyed(&sim, reqwest::Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counts["liveness_check"], 2);
    assert_eq!(counts["signature_verification"], 1);

    for bad in [
        json!({"certificate_ids": []}),
        json!({"certificate_ids": ["nope"]}),
        json!({"ids": []}),
    ] {
        problem(
            keyed(
                &sim,
                reqwest::Method::POST,
                "/v1/certificates/status",
                Some(&bad),
            )
            .await,
            400,
            "bad-request",
        )
        .await;
    }
    let unknown = json!({"certificate_ids": ["crt_abcdef"]});
    problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/certificates/status",
            Some(&unknown),
        )
        .await,
        404,
        "unknown-certificate",
    )
    .await;
    problem(
        keyed(&sim, reqwest::Method::GET, "/v1/checks", None).await,
        400,
        "bad-request",
    )
    .await;
    // Refused checks are not counted.
    let counts: Value = keyed(&sim, reqwest::Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counts["liveness_check"], 2);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_check_signatures_from_the_simulator_and_from_openssl() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let text = "基本4情報の提供に同意します。";
    let signed: Value = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let verify = |cms_b64: String| {
        let sim = &sim;
        async move {
            keyed(
                sim,
                reqwest::Method::POST,
                "/v1/verifications",
                Some(&json!({"cms_b64": cms_b64})),
            )
            .await
        }
    };
    let res = verify(signed["cms_der_b64"].as_str().unwrap().to_owned()).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["cert_serial"], person["cert_serial"]);
    assert_eq!(v["certificate_id"], person["certificate_id"]);
    assert_eq!(
        v["content_sha256"],
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    assert_eq!(v["basic4"]["name"], "山田 太郎");
    assert!(v["verification_id"].is_string() && v["not_after"].is_string());

    // OpenSSL signing with the resident's key and certificate: the same verdict.
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leaf.key"),
        person["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("text"), text).unwrap();
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            "text",
            "-signer",
            "leaf.pem",
            "-inkey",
            "leaf.key",
            "-outform",
            "DER",
            "-out",
            "by-openssl.der",
        ],
    );
    let by_openssl = std::fs::read(dir.path().join("by-openssl.der")).unwrap();
    let v: Value = verify(B64.encode(&by_openssl)).await.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");

    // A changed content no longer matches its digest.
    let mut tampered = by_openssl.clone();
    let at = tampered
        .windows(3)
        .position(|w| w == "基".as_bytes())
        .unwrap();
    tampered[at + 2] ^= 1;
    let v: Value = verify(B64.encode(&tampered)).await.json().await.unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("digest_mismatch"))
    );

    // Signed with a certificate from another CA.
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ],
    );
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/jpki-profile/openssl-signing-cert.cnf"),
    )
    .unwrap()
    .replace(";UTF8:", ";FORMAT:UTF8,UTF8:")
    .replace("UTF8:0000000000000", "UTF8:000000000000000");
    std::fs::write(dir.path().join("leaf.cnf"), config).unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "forged.key",
            "-out",
            "forged.csr",
            "-config",
            "leaf.cnf",
        ],
    );
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            "other.pem",
            "-CAkey",
            "other.key",
            "-CAcreateserial",
            "-out",
            "forged.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "ext",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            "text",
            "-signer",
            "forged.pem",
            "-inkey",
            "forged.key",
            "-outform",
            "DER",
            "-out",
            "forged.der",
        ],
    );
    let v: Value = verify(B64.encode(std::fs::read(dir.path().join("forged.der")).unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("untrusted_issuer"))
    );

    // The holder lost the card: the signature holds, the certificate does not.
    assert_eq!(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "card_lost"})
        )
        .await
        .status(),
        200
    );
    let v: Value = verify(signed["cms_der_b64"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("revoked"))
    );

    problem(verify("***".into()).await, 400, "bad-request").await;
    problem(
        verify(B64.encode(b"not cms")).await,
        400,
        "unreadable-signature",
    )
    .await;
    sim.handle.stop(true).await;
}

/// An institution's webhook that fails its first `failures` deliveries.
async fn webhook(failures: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorder = seen.clone();
    let server = actix_web::HttpServer::new(move || {
        let recorder = recorder.clone();
        actix_web::App::new().route(
            "/hook",
            web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                let recorder = recorder.clone();
                async move {
                    assert_eq!(
                        req.headers().get("content-type").unwrap(),
                        "application/jwt"
                    );
                    let mut seen = recorder.lock().unwrap();
                    seen.push(String::from_utf8(body.to_vec()).unwrap());
                    if seen.len() <= failures {
                        actix_web::HttpResponse::InternalServerError().finish()
                    } else {
                        actix_web::HttpResponse::NoContent().finish()
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/hook"), seen)
}

fn decode_callback(jwt: &str, jwks: &Value, client_id: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.expect("a kid");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = jwks.find(&kid).expect("the kid is in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&["kihon4-sim"]);
    jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mynaportal_decisions_reach_the_institution_signed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let (hook, seen) = webhook(2).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let ask = json!({"request_ref": "req-1", "client_id": "bank-a", "callback_url": hook, "return_url": "https://bank.example.jp/done", "locale": "ja"});
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/mynaportal/consent-requests",
        Some(&ask),
    )
    .await;
    assert_eq!(res.status(), 201);
    let request: Value = res.json().await.unwrap();
    let again: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/mynaportal/consent-requests",
        Some(&ask),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        again["request_id"], request["request_id"],
        "idempotent by request_ref"
    );
    let request_id = request["request_id"].as_str().unwrap();
    assert!(
        request["consent_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/sim/mynaportal/{request_id}"))
    );

    let decide = json!({"person_id": person["person_id"], "decision": "granted"});
    let res = sim
        .post(&format!("/sim/mynaportal/{request_id}/decide"), &decide)
        .await;
    assert_eq!(res.status(), 202);
    // Delivered on the third try (after 1 s and 2 s).
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "callback not retried");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let jwks: Value = sim.get("/v1/jwks.json").await.json().await.unwrap();
    let bodies = seen.lock().unwrap().clone();
    let claims: Vec<Value> = bodies
        .iter()
        .map(|jwt| decode_callback(jwt, &jwks, "bank-a"))
        .collect();
    let last = &claims[2];
    assert_eq!(last["decision"], "granted");
    assert_eq!(last["request_ref"], "req-1");
    assert_eq!(last["request_id"], request_id);
    assert_eq!(last["cert_serial"], person["cert_serial"]);
    assert!(
        last["ppid"].is_string()
            && last["consented_at"].is_string()
            && last["expires_at"].is_string()
    );
    assert!(last["exp"].as_i64().unwrap() - last["iat"].as_i64().unwrap() <= 600);
    assert!(
        claims.iter().all(|c| c["jti"] == last["jti"]),
        "one event, one jti across retries"
    );
    let page: Value = sim
        .get(&format!("/sim/mynaportal/{request_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["status"], "granted");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let page: Value = sim
        .get(&format!("/sim/mynaportal/{request_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["callback"]["delivered"], true);
    assert_eq!(page["callback"]["attempts"], 3);

    // The consent is registered: the certificate is subscribed.
    let query = json!({"queries": [{"cert_serial": person["cert_serial"]}]});
    let answer: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["results"][0]["status"], "unchanged");
    problem(
        sim.post(&format!("/sim/mynaportal/{request_id}/decide"), &decide)
            .await,
        409,
        "already-decided",
    )
    .await;

    // A declined request: a callback without certificate, no consent.
    let other: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    let ask = json!({"request_ref": "req-2", "client_id": "bank-a", "callback_url": hook, "return_url": "https://bank.example.jp/done", "locale": "en"});
    let request: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/mynaportal/consent-requests",
        Some(&ask),
    )
    .await
    .json()
    .await
    .unwrap();
    let request_id = request["request_id"].as_str().unwrap();
    let res = sim
        .post(
            &format!("/sim/mynaportal/{request_id}/decide"),
            &json!({"person_id": other["person_id"], "decision": "declined"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while seen.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "declined callback not sent");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let declined = decode_callback(&seen.lock().unwrap()[3], &jwks, "bank-a");
    assert_eq!(declined["decision"], "declined");
    assert!(declined.get("cert_serial").is_none());
    let query = json!({"queries": [{"cert_serial": other["cert_serial"]}]});
    let answer: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["results"][0]["status"], "not_subscribed");

    let bad = json!({"request_ref": "r", "client_id": "c", "callback_url": "ftp://x", "return_url": "https://ok.example", "locale": "fr"});
    let body = problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/mynaportal/consent-requests",
            Some(&bad),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["callback_url", "locale"]);
    problem(
        sim.post("/sim/mynaportal/nope/decide", &decide).await,
        404,
        "not-found",
    )
    .await;
    problem(
        sim.post(
            &format!("/sim/mynaportal/{request_id}/decide"),
            &json!({"person_id": "x", "decision": "maybe"}),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    sim.handle.stop(true).await;
}

#[actix_web::test]
async fn sim_control_answers_loopback_callers_only_unless_opened() {
    use actix_web::test::{TestRequest, call_service, init_service};
    for public in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::open(SimSettings {
            data_dir: dir.path().to_path_buf(),
            api_key: None,
            sim_routes_public: public,
        })
        .await
        .unwrap();
        let app = init_service(
            actix_web::App::new()
                .app_data(web::Data::new(sim))
                .configure(kihon4_sim::configure)
                .default_service(web::to(kihon4_sim::no_route))
                .wrap(actix_web::middleware::from_fn(kihon4_sim::guard)),
        )
        .await;
        let from = |peer: &str| {
            TestRequest::get()
                .uri("/sim/stats")
                .peer_addr(peer.parse().unwrap())
                .to_request()
        };
        assert_eq!(
            call_service(&app, from("127.0.0.1:40000")).await.status(),
            200
        );
        assert_eq!(call_service(&app, from("[::1]:40000")).await.status(), 200);
        let remote = call_service(&app, from("192.0.2.77:40000")).await.status();
        assert_eq!(remote, if public { 200 } else { 403 }, "public = {public}");
        // Provider routes are for everyone with a key.
        let ca = TestRequest::get()
            .uri("/v1/ca")
            .peer_addr("192.0.2.77:40000".parse().unwrap())
            .to_request();
        assert_eq!(call_service(&app, ca).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kihon4_reads_the_simulators_crl_as_a_stream() {
    use kihon4_core::jpki::crl::{CrlIssuer, SerialSet, check_crl};
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let a: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let b: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    sim.post("/sim/persons/bulk", &json!({"count": 500, "seed": 3}))
        .await;
    for (p, kind) in [(&a, "death"), (&b, "card_lost")] {
        let id = p["person_id"].as_str().unwrap();
        assert_eq!(
            sim.post(&format!("/sim/persons/{id}/events"), &json!({"kind": kind}))
                .await
                .status(),
            200
        );
    }
    sim.post("/sim/events/bulk", &json!({"seed": 4, "deaths": 100}))
        .await;
    sim.post("/sim/crl/publish", &json!({})).await;
    let crl = crl_der(&sim, "/v1/crl", None).await.bytes().await.unwrap();
    let ca_der = sim.get("/v1/ca").await.bytes().await.unwrap();
    let ca = x509_cert::Certificate::from_der(&ca_der).unwrap();
    let serial = |p: &Value| {
        kihon4_core::domain::CertSerial::parse(p["cert_serial"].as_str().unwrap()).unwrap()
    };
    let wanted: SerialSet = [serial(&a), serial(&b)].iter().collect();
    let (summary, found) = check_crl(
        crl.as_ref(),
        &CrlIssuer::from_certificate(&ca).unwrap(),
        &wanted,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(summary.entries, 102);
    let mut reasons: Vec<Option<u8>> = found.iter().map(|r| r.reason).collect();
    reasons.sort();
    assert_eq!(reasons, [Some(5), Some(6)]);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kihon4_verifies_what_residents_sign() {
    use kihon4_core::jpki::verify::{SignatureError, TrustAnchors, verify_signed_document};
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let text = "同意します";
    let signed: Value = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let cms = B64.decode(signed["cms_der_b64"].as_str().unwrap()).unwrap();
    let ca =
        x509_cert::Certificate::from_der(&sim.get("/v1/ca").await.bytes().await.unwrap()).unwrap();
    let anchors = TrustAnchors::from_certificates(vec![ca]).unwrap();
    let verified = verify_signed_document(&cms, None, &anchors, chrono::Utc::now()).unwrap();
    assert_eq!(verified.content, text.as_bytes());
    assert_eq!(
        verified.certificate.serial.as_str(),
        person["cert_serial"].as_str().unwrap()
    );
    // The real J-LIS CAs do not vouch for the simulator's residents.
    let jlis = TrustAnchors::load(&[
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/jpki-trust-anchors")
    ])
    .unwrap();
    assert_eq!(
        verify_signed_document(&cms, None, &jlis, chrono::Utc::now()).unwrap_err(),
        SignatureError::UntrustedIssuer
    );
    sim.handle.stop(true).await;
}
