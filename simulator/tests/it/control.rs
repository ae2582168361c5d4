//! The simulator's answers to bad requests, and who may use its control
//! routes (`/sim/`).

use actix_web::web;
use kihon4_sim::{SimSettings, Simulator};
use serde_json::{Value, json};

use crate::helpers::{problem, spawn, taro};

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

/// `kihon4 sim --flavor`: one provider API, the other's routes not there;
/// without it both are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flavor_serves_its_provider_api_only() {
    use kihon4_sim::Flavor;
    let verify = "/pocketsign.verify.v2.VerificationService/Verify";
    let queries = "/v1/basic4/queries";
    let status = |sim: &crate::helpers::TestSim, path: &'static str| {
        let request = sim
            .http
            .post(format!("{}{path}", sim.base))
            .bearer_auth("key")
            .json(&serde_json::json!({}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for (flavor, gone, kept) in [
        (Some(Flavor::PocketSign), queries, verify),
        (Some(Flavor::Kihon4), verify, queries),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sim = crate::helpers::spawn_flavor(dir.path(), None, flavor).await;
        assert_eq!(status(&sim, gone).await, 404, "{flavor:?}: {gone}");
        assert_ne!(status(&sim, kept).await, 404, "{flavor:?}: {kept}");
        // The control routes stay.
        assert_eq!(sim.get("/sim/stats").await.status(), 200, "{flavor:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let both = crate::helpers::spawn(dir.path(), None).await;
    assert_ne!(status(&both, verify).await, 404);
    assert_ne!(status(&both, queries).await, 404);
}
