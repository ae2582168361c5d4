//! Mynaportal: the holder's decisions reach the institution as signed
//! callbacks, retried until taken.

use std::net::TcpListener;
use std::time::Instant;

use actix_web::web;
use serde_json::{Value, json};

use crate::helpers::{keyed, osaka, problem, spawn, taro};

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
