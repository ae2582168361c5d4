//! kihon4's provider client against the simulator, bad days included.

use std::time::{Duration, Instant};

use kihon4_core::domain::CertSerial;
use kihon4_core::provider::{
    CrlFetch, HttpProvider, Latest, Provider, ProviderError, ProviderSettings, RevokedReason,
    SubscribeOutcome, Subscription,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{TestSim, spawn, taro};

fn client(sim: &TestSim, key: &str, rps: f64) -> HttpProvider {
    let mut settings = ProviderSettings::new(
        url::Url::parse(&format!("{}/", sim.base)).unwrap(),
        SecretString::from(key.to_owned()),
    );
    settings.requests_per_second = rps;
    settings.timeout = Duration::from_secs(5);
    settings.max_attempts = 20;
    settings.max_wait = Duration::from_secs(60);
    HttpProvider::new(settings).unwrap()
}

fn subscription() -> Subscription {
    let now = chrono::Utc::now();
    Subscription {
        consent_id: "consent-7".into(),
        granted_at: now,
        expires_at: now + chrono::Duration::days(3653),
    }
}

async fn faults(sim: &TestSim, body: Value) {
    let res = sim
        .http
        .put(format!("{}/sim/faults", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Three residents: one unchanged, one moved, one who lost their card; all subscribed.
async fn residents(sim: &TestSim, provider: &HttpProvider) -> Vec<(CertSerial, &'static str)> {
    let mut out = Vec::new();
    for (event, expected) in [
        (None, "unchanged"),
        (Some("move"), "changed"),
        (Some("card_lost"), "revoked"),
    ] {
        let p: Value = sim
            .post("/sim/persons", &taro())
            .await
            .json()
            .await
            .unwrap();
        let serial = CertSerial::parse(p["cert_serial"].as_str().unwrap()).unwrap();
        assert_eq!(
            provider.subscribe(&serial, &subscription()).await.unwrap(),
            SubscribeOutcome::Created
        );
        assert_eq!(
            provider.subscribe(&serial, &subscription()).await.unwrap(),
            SubscribeOutcome::AlreadyThere
        );
        if let Some(kind) = event {
            let id = p["person_id"].as_str().unwrap();
            let body = json!({"kind": kind, "basic4": {"address": "福岡県福岡市中央区天神1-1"}});
            let body = if kind == "move" {
                body
            } else {
                json!({"kind": kind})
            };
            assert_eq!(
                sim.post(&format!("/sim/persons/{id}/events"), &body)
                    .await
                    .status(),
                200
            );
        }
        out.push((serial, expected));
    }
    out
}

fn status(latest: &Latest) -> &'static str {
    match latest {
        Latest::Unchanged => "unchanged",
        Latest::Changed { .. } => "changed",
        Latest::AwaitingReissue => "awaiting_reissue",
        Latest::Deceased { .. } => "deceased",
        Latest::Revoked { .. } => "revoked",
        Latest::NotSubscribed => "not_subscribed",
        Latest::UnknownCertificate => "unknown_certificate",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_query_workload_completes_correctly_through_errors_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), Some("institution-key")).await;
    let provider = client(&sim, "institution-key", 200.0);
    let people = residents(&sim, &provider).await;
    faults(&sim, json!({"error_rate": 0.3, "latency_ms": 200})).await;
    let workload: Vec<CertSerial> = (0..10_000)
        .map(|i| people[i % people.len()].0.clone())
        .collect();
    let answers = provider
        .latest_basic4(&workload)
        .await
        .expect("the workload completes");
    assert_eq!(answers.len(), workload.len());
    for (i, answer) in answers.iter().enumerate() {
        let (serial, expected) = &people[i % people.len()];
        assert_eq!(&answer.cert_serial, serial);
        assert_eq!(status(&answer.latest), *expected, "answer {i}");
    }
    match &answers[1].latest {
        Latest::Changed {
            basic4,
            current_cert_serial,
            ..
        } => {
            assert_eq!(basic4.address.as_str(), "福岡県福岡市中央区天神1-1");
            assert_ne!(current_cert_serial, &people[1].0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        answers[2].latest,
        Latest::Revoked {
            reason: RevokedReason::Lost
        }
    );
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_pauses_the_client_and_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let provider = client(&sim, "k", 100.0);
    let people = residents(&sim, &provider).await;
    faults(
        &sim,
        json!({"maintenance": true, "maintenance_retry_after_s": 1}),
    )
    .await;
    let serials: Vec<CertSerial> = people.iter().map(|(s, _)| s.clone()).collect();
    let before = stats(&sim).await;
    let started = Instant::now();
    let call = tokio::spawn({
        let provider = provider.clone();
        async move { provider.latest_basic4(&serials).await }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let requests_during = stats(&sim).await - before;
    faults(&sim, json!({})).await;
    let answers = call.await.unwrap().expect("resumes after maintenance");
    assert_eq!(answers.len(), 3);
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // It waited out the announced Retry-After instead of hammering: about one try a second.
    assert!(
        requests_during <= 6,
        "{requests_during} requests in 2.5 s of maintenance"
    );
    sim.handle.stop(true).await;
}

async fn stats(sim: &TestSim) -> u64 {
    let v: Value = sim
        .http
        .get(format!("{}/sim/stats", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["provider_requests"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_refused_answers_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), Some("institution-key")).await;
    let provider = client(&sim, "institution-key", 100.0);
    let people = residents(&sim, &provider).await;
    faults(&sim, json!({"malformed_rate": 1.0})).await;
    let err = provider
        .latest_basic4(&[people[0].0.clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    faults(&sim, json!({})).await;

    let stranger = client(&sim, "wrong-key", 100.0);
    assert_eq!(
        stranger
            .latest_basic4(&[people[0].0.clone()])
            .await
            .unwrap_err(),
        ProviderError::Unauthorized
    );
    let unknown = CertSerial::parse("abcdef").unwrap();
    match provider
        .subscribe(&unknown, &subscription())
        .await
        .unwrap_err()
    {
        ProviderError::Rejected {
            status,
            problem_type,
            ..
        } => {
            assert_eq!(status, 404);
            assert!(problem_type.ends_with("unknown-certificate"));
        }
        other => panic!("{other:?}"),
    }
    provider.unsubscribe(&people[0].0).await.unwrap();
    provider.unsubscribe(&people[0].0).await.unwrap();
    let answer = provider
        .latest_basic4(&[people[0].0.clone()])
        .await
        .unwrap();
    assert_eq!(answer[0].latest, Latest::NotSubscribed);

    // The CRL with its ETag; the CA certificate.
    let CrlFetch::Fresh { etag, der } = provider.crl(None).await.unwrap() else {
        panic!("a CRL")
    };
    assert!(!der.is_empty());
    assert_eq!(
        provider.crl(etag.as_deref()).await.unwrap(),
        CrlFetch::NotModified
    );
    assert!(!provider.ca_certificate().await.unwrap().is_empty());

    // Nobody listening: unavailable after the attempts, not a panic.
    let mut settings = ProviderSettings::new(
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
        SecretString::from("k".to_owned()),
    );
    settings.max_attempts = 2;
    let nowhere = HttpProvider::new(settings).unwrap();
    assert!(matches!(
        nowhere.ca_certificate().await.unwrap_err(),
        ProviderError::Unavailable { attempts: 2, .. }
    ));
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_exceeds_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let provider = client(&sim, "k", 20.0);
    let before = stats(&sim).await;
    let started = Instant::now();
    let calls = (0..40).map(|_| {
        let provider = provider.clone();
        tokio::spawn(async move { provider.ca_certificate().await })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    // 40 requests at 20 a second, evenly spaced: the last cannot start before 1.95 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats(&sim).await - before, 40);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_residents_and_bulk_events_answer_like_single_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let res = sim
        .post("/sim/persons/bulk", &json!({"count": 2000, "seed": 42}))
        .await;
    assert_eq!(res.status(), 201);
    let mut serials = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/sim/persons?limit=700&include=basic4&cursor={c}"),
            None => "/sim/persons?limit=700&include=basic4".into(),
        };
        let page: Value = sim.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            kihon4_core::domain::Name::parse(item["basic4"]["name"].as_str().unwrap(), None)
                .unwrap();
            serials.push(CertSerial::parse(item["cert_serial"].as_str().unwrap()).unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(serials.len(), 2000);
    assert_eq!(
        sim.get("/sim/persons?include=email").await.status(),
        400,
        "only the four items can be included"
    );
    let provider = client(&sim, "k", 5000.0);
    // Half one by one, half in bulk: the answers cannot tell them apart.
    for serial in &serials[..1000] {
        provider.subscribe(serial, &subscription()).await.unwrap();
    }
    let s = subscription();
    let mut items: Vec<Value> = serials[1000..]
        .iter()
        .map(|serial| {
            json!({"cert_serial": serial.as_str(), "consent_id": s.consent_id,
                   "granted_at": s.granted_at, "expires_at": s.expires_at})
        })
        .collect();
    items.push(
        json!({"cert_serial": "7fffffffffffffff01", "consent_id": "c-x",
                      "granted_at": s.granted_at, "expires_at": s.expires_at}),
    );
    let res = sim
        .post("/sim/subscriptions/bulk", &json!({ "items": items }))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"registered": 1000, "unknown_serials": ["7fffffffffffffff01"]})
    );
    for bad in [
        json!({"items": []}),
        json!({"items": [{"cert_serial": "zz", "consent_id": "c", "granted_at": s.granted_at, "expires_at": s.expires_at}]}),
        json!({"items": [{"cert_serial": "0a", "consent_id": "c", "granted_at": s.expires_at, "expires_at": s.granted_at}]}),
        json!({"items": vec![items[0].clone(); 5001]}),
    ] {
        assert_eq!(
            sim.post("/sim/subscriptions/bulk", &bad).await.status(),
            400
        );
    }
    let res = sim
        .post(
            "/sim/events/bulk",
            &json!({"seed": 7, "moves": 50, "renames": 20, "deaths": 30, "cards_lost": 10}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let done: Value = res.json().await.unwrap();
    assert_eq!(
        done,
        json!({"moves": 50, "renames": 20, "deaths": 30, "cards_lost": 10})
    );
    let answers = provider.latest_basic4(&serials).await.unwrap();
    let count = |s: &str| answers.iter().filter(|a| status(&a.latest) == s).count();
    assert_eq!(
        (
            count("changed"),
            count("deceased"),
            count("revoked"),
            count("unchanged")
        ),
        (70, 30, 10, 1890)
    );
    let published: Value = sim
        .post("/sim/crl/publish", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["entries"], 110);
    // A lazy certificate is made when first asked for, and is a real one.
    let page: Value = sim.get("/sim/persons?limit=1").await.json().await.unwrap();
    let id = page["items"][0]["person_id"].as_str().unwrap();
    let person: Value = sim
        .get(&format!("/sim/persons/{id}"))
        .await
        .json()
        .await
        .unwrap();
    if let Some(pem) = person["certificate_pem"].as_str() {
        let der = der::Document::from_pem(pem).unwrap().1;
        let cert = kihon4_core::jpki::parse_signing_certificate(der.as_bytes()).unwrap();
        assert_eq!(
            cert.serial.as_str(),
            person["cert_serial"].as_str().unwrap()
        );
    }
    let again = sim
        .post("/sim/persons/bulk", &json!({"count": 10, "seed": 42}))
        .await;
    assert_eq!(again.status(), 409, "the same seed twice");
    for bad in [
        json!({"count": 0, "seed": 1}),
        json!({"count": 1_000_001, "seed": 1}),
        json!({"seed": 1}),
    ] {
        assert_eq!(sim.post("/sim/persons/bulk", &bad).await.status(), 400);
    }
    assert_eq!(
        sim.post("/sim/events/bulk", &json!({"seed": 1, "deaths": 5000}))
            .await
            .status(),
        400
    );
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_protocol_through_the_client() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let provider = client(&sim, "k", 200.0);
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let signed: Value = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": base64::engine::general_purpose::STANDARD.encode("同意します")}),
        )
        .await
        .json()
        .await
        .unwrap();
    let cms = base64::engine::general_purpose::STANDARD
        .decode(signed["cms_der_b64"].as_str().unwrap())
        .unwrap();
    let verification = provider.verify(&cms).await.unwrap();
    assert!(verification.valid);
    assert_eq!(
        verification.cert_serial.as_str(),
        person["cert_serial"].as_str().unwrap()
    );
    assert_eq!(verification.basic4.name.as_str(), "山田 太郎");
    let statuses = provider
        .certificate_status(std::slice::from_ref(&verification.certificate_id))
        .await
        .unwrap();
    assert_eq!(statuses[0].status, "good");
    let counts = provider
        .checks(from, chrono::Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        (counts.signature_verification, counts.liveness_check),
        (1, 1)
    );
    assert!(matches!(
        provider.verify(b"not cms").await.unwrap_err(),
        ProviderError::Rejected { status: 400, .. }
    ));

    assert_eq!(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "card_lost"})
        )
        .await
        .status(),
        200
    );
    sim.post("/sim/crl/publish", &json!({})).await;
    let partitions = provider.crl_partitions().await.unwrap();
    assert_eq!(partitions.len(), 1);
    assert!(partitions[0].distribution_point.contains("千代田区"));
    let CrlFetch::Fresh { etag, .. } = provider
        .crl_partition(&partitions[0].id, None)
        .await
        .unwrap()
    else {
        panic!("a CRL")
    };
    assert_eq!(
        provider
            .crl_partition(&partitions[0].id, etag.as_deref())
            .await
            .unwrap(),
        CrlFetch::NotModified
    );
    assert!(provider.crl_partition("../etc", None).await.is_err());

    let request = kihon4_core::provider::MynaportalRequest {
        request_ref: "ref-9".into(),
        client_id: "kihon4".into(),
        callback_url: "https://bank.example.jp/v1/webhooks/mynaportal".into(),
        return_url: "https://bank.example.jp/consent/done".into(),
        locale: "ja".into(),
    };
    let ticket = provider.mynaportal_request(&request).await.unwrap();
    assert_eq!(
        provider
            .mynaportal_request(&request)
            .await
            .unwrap()
            .request_id,
        ticket.request_id
    );
    let keys = provider.jwks().await.unwrap();
    assert_eq!(keys["keys"][0]["alg"], "RS256");
    sim.handle.stop(true).await;
}
